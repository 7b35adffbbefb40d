"""What a valid training or model setting is: one rule for every path that takes them (`MultiDistributionModel.compile`
and the model constructors, `TrainConfig`, `OnboardConfig`, a TFX `custom_config.train`, `mdl-tf bench movielens1m
--probe`). It imports no TensorFlow, so a configuration is checked when it is built, before any data is read.
The defaults of `check_optimizer_settings` only make a setting optional; the training defaults live in
`mdl_tf.models.base`."""
from __future__ import annotations

import math
import numbers

from mdl_tf.errors import InvalidSetting, _short

LARGEST_SIZE = 2 ** 31 - 1  # a width or count beyond int32 is never meant, and TensorFlow's shapes would overflow


def finite_number(value) -> float | None:
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
                             weight_decay=0.0, warmup_steps=0, allow_schedules: bool = False) -> None:
    """The one rule for the training settings `MultiDistributionModel.compile` takes; `TrainConfig` and
    `OnboardConfig` check it when built, so a bad value stops a run before any data is read.

    dense_lr, sparse_lr: finite numbers > 0 (a negative rate would climb the loss without any error); with
    `allow_schedules` (compile only: a configuration must stay JSON) also a Keras LearningRateSchedule, though not
    together with warmup_steps (build the warm-up into the schedule). sparse_accumulator, weight_decay: finite numbers
    >= 0; oov_rate: a number in [0, 1); warmup_steps: a whole number >= 0. Raises InvalidSetting(setting, message)
    naming the first one out of range, so a caller can name its own flag for it (`--probe dense_lr=...`)."""
    rules = (("dense_lr", dense_lr, lambda v: v > 0, "> 0"), ("sparse_lr", sparse_lr, lambda v: v > 0, "> 0"),
             ("sparse_accumulator", sparse_accumulator, lambda v: v >= 0, ">= 0"),
             ("oov_rate", oov_rate, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
             ("weight_decay", weight_decay, lambda v: v >= 0, ">= 0"))
    for name, value, ok, rule in rules:
        if allow_schedules and name.endswith("_lr") and callable(value):  # a LearningRateSchedule is callable
            if name == "dense_lr" and warmup_steps:
                raise InvalidSetting("warmup_steps", "warmup_steps ramps a fixed dense_lr; with a learning-rate "
                                                     "schedule build the warm-up into the schedule instead")
            continue
        number = finite_number(value)
        if number is None:
            raise InvalidSetting(name, f"{name} must be a finite number, got {_short(value)}")
        if not ok(number):
            raise InvalidSetting(name, f"{name} must be {rule}, got {_short(value)}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral):
        raise InvalidSetting("warmup_steps", f"warmup_steps must be a whole number of steps, got "
                                             f"{_short(warmup_steps)}")
    if warmup_steps < 0:
        raise InvalidSetting("warmup_steps", f"warmup_steps must be >= 0, got {warmup_steps}")


def check_model_sizes(minimum: int = 1, **sizes) -> None:
    """Every given width or count (d_model, num_layers, hidden, epochs, ...) is a whole number from `minimum` (1; 0
    for a count whose zero is still an architecture, such as a baseline's tower layers) to LARGEST_SIZE. The
    constructors and configurations check it before Keras meets a negative, zero or huge dimension (its error would
    name a tensor, not the setting). Raises InvalidSetting naming the first one that is not."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise InvalidSetting(name, f"{name} must be a whole number >= {minimum}, got {_short(value)}")
        if value > LARGEST_SIZE:
            raise InvalidSetting(name, f"{name} must be at most {LARGEST_SIZE}, got {_short(value)}")
