"""Model registry: `build_model(name, feature_config, vocab_sizes, **hparams)`.

Every registered model maps the transformed feature dict (`mdl_tf.data.transform`) to {task: probability}, exposes
`compute_logits` -> [B, N_t] and trains with the shared two-optimizer step of `MultiDistributionModel`.
"""
from __future__ import annotations

from mdl_tf.models.base import MultiDistributionModel, precision_policy
from mdl_tf.models.baselines import BASELINES
from mdl_tf.models.mdl import MDL_DEFAULTS, MDLModel

REGISTRY = {"mdl": MDLModel, **BASELINES}

from mdl_tf.constants import PRECISIONS  # noqa: E402


def available_models() -> list:
    return sorted(REGISTRY)


def build_model(name: str, feature_config, vocab_sizes: dict, precision: str = "float32",
                **hparams) -> MultiDistributionModel:
    """Build (and create the weights of) a registered model under the given dtype policy."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with precision_policy(precision):
        model = REGISTRY[name](feature_config, vocab_sizes, **hparams)
        # Create every weight now, under the same policy as the layers.
        return model.build_with_dummy_batch()


__all__ = ["MDLModel", "MDL_DEFAULTS", "MultiDistributionModel", "REGISTRY", "available_models", "build_model"]
