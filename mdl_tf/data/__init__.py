"""Datasets: the embedded synthetic generator and loaders for real data, all in the feature-config format."""
from types import SimpleNamespace

from mdl_tf.data import aliccp, movielens, movielens1m, synthetic

# name -> an object with feature_config() (what `mdl-tf schema export` writes to schemas/<name>/).
DATASETS = {"synthetic": synthetic, "movielens": movielens, "aliccp": aliccp,
            **{movielens1m.dataset_name(p, priors): SimpleNamespace(
                feature_config=lambda p=p, priors=priors: movielens1m.feature_config(p, priors))
               for p in movielens1m.PROTOCOLS for priors in (False, True)}}

__all__ = ["DATASETS", "aliccp", "movielens", "movielens1m", "synthetic"]
