"""Datasets: the embedded synthetic generator and loaders for real data, all in the feature-config format."""
from mdl_tf.data import aliccp, movielens, synthetic

DATASETS = {"synthetic": synthetic, "movielens": movielens, "aliccp": aliccp}

__all__ = ["DATASETS", "aliccp", "movielens", "synthetic"]
