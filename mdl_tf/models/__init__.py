"""Model registry: `build_model(name, feature_config, vocab_sizes, **hparams)`.

Every registered model maps the transformed feature dict (`mdl_tf.data.transform`) to {task: probability}, exposes
`compute_logits` -> [B, N_t] and trains with the shared two-optimizer step of `MultiDistributionModel`.
"""
from __future__ import annotations

import difflib
import inspect

from mdl_tf.models.base import MultiDistributionModel, precision_policy
from mdl_tf.models.baselines import BASELINES
from mdl_tf.models.mdl import MDL_DEFAULTS, MDLModel

REGISTRY = {"mdl": MDLModel, **BASELINES}

from mdl_tf.constants import PRECISIONS  # noqa: E402
from mdl_tf.errors import InvalidSetting  # noqa: E402


def available_models() -> list:
    return sorted(REGISTRY)


def constructor_params(name: str) -> list:
    """(class name, inspect.Parameter) of every constructor parameter of model `name`'s class and its mdl_tf base
    classes, most derived first."""
    return [(cls.__name__, p) for cls in REGISTRY[name].__mro__
            if "__init__" in vars(cls) and cls.__module__.startswith("mdl_tf")
            for p in inspect.signature(cls.__init__).parameters.values()]


def hparam_names(name: str) -> set:
    """The hyperparameters `build_model(name, ...)` takes by name: its constructors' flags and, for a baseline, the
    model-specific ones it declares (`extra_hparams`: expert counts, DFFM's rank, ...)."""
    flags = {p.name for _, p in constructor_params(name)
             if p.name not in ("self", "feature_config", "vocab_sizes") and p.kind == p.POSITIONAL_OR_KEYWORD}
    extra = getattr(REGISTRY[name], "extra_hparams", None)
    return flags | set(extra() if extra else ())


def check_hparam_names(name: str, hparams: dict) -> None:
    """The names of a run's model settings, checked before any data is read (`mdl-tf train`, the pipeline runners)
    and again by `build_model`. Raises InvalidSetting naming "model" for an unregistered model name, and naming the
    first unknown hyperparameter (with the closest known name and all of them) when `hparams` holds a name model
    `name` does not take: Keras' own words for it, from the constructor, would be "('Keyword argument not
    understood:', 'x')". Values are checked by the model's constructor."""
    if name not in REGISTRY:
        raise InvalidSetting("model", f"unknown model '{name}'; available: {', '.join(available_models())}")
    unknown = sorted(set(hparams) - hparam_names(name))
    if unknown:
        known = sorted(hparam_names(name))
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise InvalidSetting(unknown[0], f"{name} has no hyperparameter {', '.join(unknown)}"
                             + (f" (did you mean {close[0]}?)" if close else "")
                             + f"; its hyperparameters are {', '.join(known)}")


def build_model(name: str, feature_config, vocab_sizes: dict, precision: str = "float32",
                **hparams) -> MultiDistributionModel:
    """Build (and create the weights of) a registered model under the given dtype policy.

    Raises ValueError for an unknown `precision`, and InvalidSetting (a ValueError and UserError: the command line
    prints it in one line) for an unknown `name` or a hyperparameter name the model does not take (before anything
    is built) and, from the constructors, for a width or count below 1 or a value outside its choices
    (`check_model_sizes`, ...)."""
    check_hparam_names(name, hparams)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with precision_policy(precision):
        model = REGISTRY[name](feature_config, vocab_sizes, **hparams)
        # Create every weight now, under the same policy as the layers.
        return model.build_with_dummy_batch()


__all__ = ["MDLModel", "MDL_DEFAULTS", "MultiDistributionModel", "REGISTRY", "available_models", "build_model",
           "check_hparam_names", "constructor_params", "hparam_names"]
