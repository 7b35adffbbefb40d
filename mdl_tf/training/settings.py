"""What a valid training or model setting is: one rule for every path that takes them (`MultiDistributionModel.compile`
and the model constructors, `TrainConfig`, `OnboardConfig`, `mdl-tf bench movielens1m --probe`). Importable without
TensorFlow, so a configuration is checked when it is built, before any data is read or TensorFlow is loaded.
The defaults of `check_optimizer_settings` only make a setting optional; the training defaults live in
`mdl_tf.models.base`."""
from __future__ import annotations

import math
import numbers

from mdl_tf.errors import InvalidSetting


def _finite(value) -> float | None:
    """`value` as a finite float (Python and numpy numbers, 0-d arrays, eager tensors), else None (text, bools,
    NaN, infinities, ints beyond the float range)."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def check_optimizer_settings(dense_lr=1e-3, sparse_lr=0.05, sparse_accumulator=0.0, oov_rate=0.0,
                             weight_decay=0.0, warmup_steps=0) -> None:
    """The one rule for the training settings `MultiDistributionModel.compile` takes; `TrainConfig` and
    `OnboardConfig` check it when built, so a bad value stops a run before any data is read.

    dense_lr, sparse_lr: finite numbers > 0 (a negative rate would climb the loss without any error), or a Keras
    LearningRateSchedule or another callable Keras takes (compile only); sparse_accumulator, weight_decay: finite numbers >= 0; oov_rate: a number in
    [0, 1); warmup_steps: a whole number >= 0. Raises InvalidSetting(setting, message) naming the first one out of
    range, so a caller can name its own flag for it (`--probe dense_lr=...`)."""
    rules = (("dense_lr", dense_lr, lambda v: v > 0, "> 0"), ("sparse_lr", sparse_lr, lambda v: v > 0, "> 0"),
             ("sparse_accumulator", sparse_accumulator, lambda v: v >= 0, ">= 0"),
             ("oov_rate", oov_rate, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
             ("weight_decay", weight_decay, lambda v: v >= 0, ">= 0"))
    for name, value, ok, rule in rules:
        if name.endswith("_lr") and callable(value):  # a Keras LearningRateSchedule (or a callable, as Keras takes)
            continue
        number = _finite(value)
        if number is None:
            raise InvalidSetting(name, f"{name} must be a finite number, got {value!r}")
        if not ok(number):
            raise InvalidSetting(name, f"{name} must be {rule}, got {value!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral):
        raise InvalidSetting("warmup_steps", f"warmup_steps must be a whole number of steps, got {warmup_steps!r}")
    if warmup_steps < 0:
        raise InvalidSetting("warmup_steps", f"warmup_steps must be >= 0, got {warmup_steps}")


def check_model_sizes(**sizes) -> None:
    """Every given width or count (d_model, num_layers, hidden, expert counts, ...) is a whole number >= 1: checked in
    the constructors, before Keras meets a negative or zero dimension (its error would name a tensor, not the
    setting). Raises InvalidSetting naming the first one that is not."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InvalidSetting(name, f"{name} must be a whole number >= 1, got {value!r}")
