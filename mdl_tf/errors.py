"""User-facing error kinds. Every error a user can fix (bad input data, config, flag or request value) derives from
`UserError`, so the command line can end it in one line with exit code 2 instead of a traceback."""
from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user gave us; the message names where it is and how to fix it."""


class InvalidSetting(UserError):
    """A training or model setting out of its range. `setting` is its Python name (`dense_lr`), so a caller can name
    its own flag for it (`--probe dense_lr=...`, `custom_config.train.dense_lr`)."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting

    def __reduce__(self):  # picklable (Beam and multiprocessing carry errors between processes)
        return type(self), (self.setting, str(self))


class DataError(UserError):
    """Bad input data; the message names the file (or request), the row and the column."""


class UnknownFeatures(DataError):
    """A row (a request or a JSON line) holding keys that are not the model's features: `names` lists them and
    `guesses` maps those that look misspelt to the feature meant, so a caller can add its own way out (`mdl-tf
    predict --keep` for a field meant to pass through)."""

    def __init__(self, message: str, names: list, guesses: dict):
        super().__init__(message)
        self.names, self.guesses = list(names), dict(guesses)

    def __reduce__(self):
        return type(self), (str(self), self.names, self.guesses)


class InvalidValue(DataError):
    """One value that does not fit its column's rule (`mdl_tf.values`).

    `column` is the column or feature, `value` the value as given, `reason` what was expected (no location: the caller
    knows the file/request and row and puts them in front)."""

    def __init__(self, column: str, value, reason: str):
        super().__init__(f"column '{column}': value {_short(value)} {reason}")
        self.column, self.value, self.reason = column, value, reason


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
