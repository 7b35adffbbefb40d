"""The value contract: what a valid value is for every column of a feature config, at every door.

One rule per column (`column_rules`), derived from `features.yaml`; `check_value` is the only place that decides
whether a value is accepted, normalised (to one canonical Python value) or refused (`InvalidValue`, saying what was
expected). Every door uses it: the CSV loaders and the pipeline's pre-run check (`check_frame`), the client's and
the CLI's row -> tf.Example conversion (`check_row`), and the development server's checks of incoming tf.Examples and
raw tensors. The README's "Accepted values" table documents the same rules.

| column role                          | canonical value | accepted                                                   |
|--------------------------------------|-----------------|------------------------------------------------------------|
| numeric feature                      | float           | a finite number within float32 range, or its decimal text  |
| id (categorical, scenario) `string`  | str             | text, or an integer (written in decimal)                   |
| id `int`, time column                | int             | an integer in int64 range, or its digits (`[+-]?[0-9]+`)   |
| multi_hot / sequence / membership    | str "a|b"       | separator-joined text, or a list of ids (text or integers) |
| label                                | int 0 or 1      | 0 or 1 as an integer, or the text "0"/"1"                  |

A hashed feature (`hash_buckets`) follows the rule of its kind and dtype: any id is valid (there is no vocabulary to
be out of; an unseen id gets its own bucket), so no rule depends on the training data.

Missing (None, "", NaN, pandas NA, an empty list) is allowed except in the scenario and time columns. Booleans,
objects, nested lists, floats for ids and labels, text that is not a number for numbers, NaN/inf text, values out of
range and text that is not UTF-8 are refused. CSV files also have a rule per column (`check_csv_types`): CsvExampleGen
infers a column's type from its cells (all integers -> INT, numbers -> FLOAT, else BYTES) and the pipeline fails when
that type differs from schema.pbtxt, so such a column is refused up front.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re

import numpy as np
import pandas as pd

from mdl_tf.config import FeatureConfig
from mdl_tf.errors import DataError, InvalidValue, UnknownFeatures

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
CSV_TYPES = ("INT", "FLOAT", "STRING")  # CsvExampleGen's type hierarchy, lowest first
_CSV_TYPE_OF = {"float": "FLOAT", "int": "INT", "string": "STRING"}


@dataclasses.dataclass(frozen=True)
class ColumnRule:
    """How one column's values are checked.

    kind: numeric (one float), id (one id), ids (separator-joined ids), label (0/1), time (an integer timestamp);
    dtype: float | int | string (the tf.Example / schema.pbtxt type); required: a missing value is refused;
    serving: the column is a model input (sent at serving time; labels and bookkeeping columns are not)."""

    column: str
    kind: str
    dtype: str
    separator: str = "|"
    required: bool = False
    serving: bool = True

    @property
    def expects(self) -> str:
        """The accepted forms, in words (ends every refusal)."""
        if self.kind == "numeric":
            return "expected a finite number (e.g. 3.5 or \"3.5\"); leave it empty or null when unknown"
        if self.kind == "label":
            return ("expected the label 0 or 1 written as an integer; leave it empty when unknown (CsvExampleGen "
                    "reads a column holding 1.0 as FLOAT while schema.pbtxt declares labels INT: write labels "
                    "with pandas' df[col].astype('Int64'))")
        if self.kind == "time" or self.dtype == "int":
            return (f"expected an integer in int64 range (a JSON integer or a string of digits; "
                    f"a float loses digits above 2**53)")
        if self.kind == "id":
            return "expected one id: text, or an integer"
        return (f"expected ids joined with '{self.separator}' (e.g. \"a{self.separator}b\") or a JSON list of ids "
                f"(e.g. [\"a\", \"b\"]); each id text or an integer")

    @property
    def csv_type(self) -> str:
        """The type CsvExampleGen must infer for this column so that it matches schema.pbtxt."""
        if self.kind in ("label", "time"):
            return "INT"
        return _CSV_TYPE_OF[self.dtype]


def column_rules(cfg: FeatureConfig) -> dict:
    """{column: ColumnRule} for every column the config declares: model inputs first, then labels, time, user and
    query columns (these are read from files, never sent at serving time)."""
    rules = {}
    for f in cfg.features:
        kind = {"numeric": "numeric", "categorical": "id"}.get(f.kind, "ids")
        rules[f.name] = ColumnRule(f.name, kind, f.dtype, separator=f.separator)
    sc = cfg.scenario
    rules[sc.column] = ColumnRule(sc.column, "id", sc.dtype, required=True)
    if sc.membership_column:
        rules[sc.membership_column] = ColumnRule(sc.membership_column, "ids", "string", separator=sc.separator)
    for label in cfg.label_columns:
        rules[label] = ColumnRule(label, "label", "int", serving=False)
    if cfg.time_column and cfg.time_column not in rules:
        rules[cfg.time_column] = ColumnRule(cfg.time_column, "time", "int", required=True, serving=False)
    for col in (cfg.user_column, cfg.query_column):
        if col and col not in rules:
            rules[col] = ColumnRule(col, "id", "string", serving=False)
    return rules


def serving_rules(cfg: FeatureConfig) -> dict:
    """The rules of the model's raw inputs (what a serving request carries)."""
    return {c: r for c, r in column_rules(cfg).items() if r.serving}


# -- one value ------------------------------------------------------------------------------------------------------
def is_missing(value) -> bool:
    """None, "", NaN (float or numpy), pandas NA: a missing value."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return value == ""
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return False


def _type_name(value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, (float, np.floating)):
        return "a float"
    return f"a {type(value).__name__}"


def _text(rule: ColumnRule, value) -> str:
    """str or UTF-8 bytes -> str that encodes as UTF-8 (tf.Example bytes, CSV text)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue(rule.column, value, f"is not UTF-8 text; {rule.expects}") from None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(rule.column, value, f"is not valid UTF-8 text (a lone surrogate); {rule.expects}") from None
    return value


def _number(rule: ColumnRule, value) -> float:
    if isinstance(value, (str, bytes)):
        text = _text(rule, value).strip()
        if not text:
            raise InvalidValue(rule.column, value, f"is blank; {rule.expects}")
        if not _FLOAT_TEXT.fullmatch(text):
            raise InvalidValue(rule.column, value, f"is not a number; {rule.expects}")
        if _INT_TEXT.fullmatch(text) and not INT64_MIN <= int(text) <= INT64_MAX:
            # CsvExampleGen reads integers beyond int64 as text, which turns the whole column into BYTES.
            raise InvalidValue(rule.column, value, f"is an integer beyond int64; write it as a decimal (e.g. "
                                                   f"{float(text):.6g}); {rule.expects}")
        x = float(text)
    elif isinstance(value, (int, np.integer, float, np.floating)):
        try:
            x = float(value)
        except OverflowError:
            x = math.inf
    else:
        raise InvalidValue(rule.column, value, f"is {_type_name(value)}; {rule.expects}")
    if not math.isfinite(x) or abs(x) > FLOAT32_MAX:
        raise InvalidValue(rule.column, value, f"is not a finite float32 number; {rule.expects}")
    return x


def _integer(rule: ColumnRule, value) -> int:
    if isinstance(value, (int, np.integer)):
        x = int(value)
    elif isinstance(value, (str, bytes)):
        text = _text(rule, value).strip()
        if not _INT_TEXT.fullmatch(text):
            what = "is blank" if not text else "is not an integer"
            raise InvalidValue(rule.column, value, f"{what}; {rule.expects}")
        x = int(text)
    else:
        raise InvalidValue(rule.column, value, f"is {_type_name(value)}; {rule.expects}")
    if not INT64_MIN <= x <= INT64_MAX:
        raise InvalidValue(rule.column, value, f"is out of int64 range; {rule.expects}")
    return x


def _one_id(rule: ColumnRule, value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (str, bytes)):
        return _text(rule, value)
    raise InvalidValue(rule.column, value, f"is {_type_name(value)}; {rule.expects}")


def _ids(rule: ColumnRule, value):
    sep = rule.separator
    if isinstance(value, (list, tuple, np.ndarray)):
        tokens = []
        for i, item in enumerate(value):
            if isinstance(item, (bool, np.bool_)) or is_missing(item):
                raise InvalidValue(rule.column, value, f"has an empty or boolean element {i} ({item!r}); "
                                                       f"{rule.expects}")
            token = _one_id(rule, item)
            if sep in token:
                raise InvalidValue(rule.column, value, f"has element {i} ({item!r}) containing the separator "
                                                       f"'{sep}'; {rule.expects}")
            tokens.append(token)
    else:
        tokens = [t for t in _one_id(rule, value).split(sep) if t]
    return sep.join(tokens) if tokens else None


def _label(rule: ColumnRule, value) -> int:
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return int(value)
    if isinstance(value, (str, bytes)) and _text(rule, value).strip() in ("0", "1"):
        return int(_text(rule, value).strip())
    if _is_decimal_zero_or_one(rule, value):  # 0.0/1.0: the right label in the wrong form (pandas after a NaN)
        raise InvalidValue(rule.column, value, f"is 0 or 1 written as a decimal; {rule.expects}")
    raise InvalidValue(rule.column, value, f"is not 0 or 1; {rule.expects}")


def _is_decimal_zero_or_one(rule: ColumnRule, value) -> bool:
    """Whether a label cell is a float 0.0/1.0 or its text ("1.0", "0.", "1e0")."""
    try:
        number = float(_text(rule, value) if isinstance(value, (str, bytes)) else value)
    except (TypeError, ValueError, InvalidValue):
        return False
    return number in (0.0, 1.0)


def check_value(rule: ColumnRule, value):
    """The canonical form of `value` under `rule` (None when missing); raises InvalidValue saying what is expected.

    Canonical forms: numeric -> float; int ids, time -> int; string ids -> str; multi-valued -> separator-joined str
    of the non-empty ids; label -> 0 or 1."""
    if is_missing(value) or (rule.kind == "ids" and isinstance(value, (list, tuple, np.ndarray)) and len(value) == 0):
        if rule.required:
            raise InvalidValue(rule.column, value, f"is missing, and '{rule.column}' is required in every row; "
                                                   f"{rule.expects}")
        return None
    if isinstance(value, (bool, np.bool_)):
        raise InvalidValue(rule.column, value, f"is a boolean; {rule.expects}")
    if rule.kind == "numeric":
        return _number(rule, value)
    if rule.kind == "label":
        return _label(rule, value)
    if rule.kind == "ids":
        return _ids(rule, value)
    if isinstance(value, (list, tuple, np.ndarray)):
        raise InvalidValue(rule.column, value, f"is a list, but '{rule.column}' takes one value; {rule.expects} "
                                               f"(multi-valued features are kind multi_hot or sequence)")
    if rule.kind == "time" or rule.dtype == "int":
        return _integer(rule, value)
    return _one_id(rule, value)


# -- rows (serving requests, JSON lines) -----------------------------------------------------------------------------
def check_row(row, cfg: FeatureConfig, where: str, rules: dict | None = None, ignore_unknown: bool = False) -> dict:
    """{feature: canonical value or None} for the model's raw inputs of one row (a dict of raw values).

    Columns the config knows but the model does not read (labels, time, user/query) are ignored; other keys are
    refused (a misspelt feature would otherwise be served as missing) unless `ignore_unknown` (a table's extra columns).
    `where` names the row in errors, e.g. "rows.jsonl: line 2"."""
    rules = rules or column_rules(cfg)
    if not isinstance(row, dict):
        raise DataError(f"{where}: is {_type_name(row)}; expected an object of raw features")
    if not ignore_unknown:
        unknown = sorted(str(k) for k in row if k not in rules)
        if unknown:
            served = served_features(rules)
            guesses = closest_features(unknown, served, row)
            raise UnknownFeatures(f"{where}: unknown feature(s) {unknown}{did_you_mean(unknown, guesses)}; the "
                                  f"model reads {served}", unknown, guesses)
    out = {}
    for col, rule in rules.items():
        if rule.serving:
            try:
                out[col] = check_value(rule, row.get(col))
            except InvalidValue as e:
                raise DataError(f"{where}, feature '{col}': value {_short(e.value)} {e.reason}") from None
    return out


def served_features(rules: dict) -> list:
    """The columns of `column_rules` the model reads, in config order."""
    return [c for c, r in rules.items() if r.serving]


def closest_features(names, features, row) -> dict:
    """{name: the feature of `features` it most likely misspells} for the names of `names` that have one; a feature
    `row` already holds is never a guess."""
    folded = {f.casefold(): f for f in features if f not in row}  # 'd508' for 'D508' is a slip
    out = {}
    for name in names:
        # 0.8, not difflib's 0.6: 'itme_id' (0.86 to item_id) is a slip, 'item_idd' is not one of item_price (0.67).
        # A short name is one slip below that ('2O5' for '205': one changed character of n scores 1 - 1/n).
        cutoff = min(0.8, 1 - 1 / max(len(name), 3)) - 1e-9
        guess = difflib.get_close_matches(name.casefold(), folded, n=1, cutoff=cutoff)
        if guess:
            out[name] = folded[guess[0]]
    return out


def did_you_mean(names: list, guesses: dict) -> str:
    """The hint for misspelt `names` from `closest_features`' guesses: " (did you mean 'item_id'?)" for one name,
    " (did you mean 'item_id' for 'itme_id', 'user_id' for 'usr_id'?)" for several, "" without a guess."""
    if not guesses:
        return ""
    if len(names) == 1:
        return f" (did you mean '{guesses[names[0]]}'?)"
    return " (did you mean " + ", ".join(f"'{g}' for '{k}'" for k, g in guesses.items()) + "?)"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- CSV files -------------------------------------------------------------------------------------------------------
def line_of(row_index: int) -> int:
    """1-based line number in a CSV file of 0-based data row `row_index` (the header is line 1)."""
    return row_index + 2


def csv_cell_type(text: str):
    """The type CsvExampleGen (tfx_bsl's CSV type inference) gives one cell: None (empty), INT, FLOAT or STRING."""
    if text == "":
        return None
    raw = text.encode("utf-8", "surrogateescape")
    try:
        return "INT" if INT64_MIN <= int(raw) <= INT64_MAX else "STRING"
    except ValueError:
        try:
            float(raw)
            return "FLOAT"
        except ValueError:
            return "STRING"


def check_csv_types(frame: pd.DataFrame, cfg: FeatureConfig, path) -> None:
    """Refuse columns whose cells make CsvExampleGen infer another type than schema.pbtxt declares (the pipeline
    would fail in the Transform); `frame` holds the file's cells as text. One error names every such column of the
    file, so a file with several is fixed in one go."""
    problems = []
    for col, rule in column_rules(cfg).items():
        types = {csv_cell_type(v) for v in pd.unique(frame[col])} - {None}
        if not types:
            continue
        inferred = max(types, key=CSV_TYPES.index)
        if inferred == rule.csv_type:
            continue
        held = "only integers" if inferred == "INT" else "only numbers" if inferred == "FLOAT" else "text"
        if rule.csv_type == "FLOAT":
            fix = "write at least one value with a decimal point (e.g. 3.0; pandas does for a float column)"
        elif rule.csv_type == "STRING" and col == cfg.scenario.membership_column:
            fix = (f"write the rows of one scenario with an empty '{col}' (they fall back to the scenario column '"
                   f"{cfg.scenario.column}'), so the column also holds joined lists such as 1{rule.separator}2")
        elif rule.csv_type == "STRING" and rule.kind == "ids":  # multi_hot / sequence: `dtype: string` only
            fix = (f"'{col}' holds separator-joined ids, which are text: write them so (e.g. prefix the ids, "
                   f"'t5{rule.separator}t7'); a column whose every cell is one integer reads as INT")
        elif rule.csv_type == "STRING" and not rule.serving:  # user_column / query_column: no dtype of their own
            fix = (f"'{col}' is the config's user or query column, whose ids are text: make them text (e.g. prefix "
                   f"'u'), or declare '{col}' also as a categorical feature with `dtype: int` (the model then reads "
                   f"it; regenerate schema.pbtxt with `mdl-tf schema export --schema <schema dir>`)")
        elif rule.csv_type == "STRING":
            fix = (f"declare `dtype: int` for '{col}' if they are integer ids (and regenerate schema.pbtxt with "
                   f"`mdl-tf schema export --schema <schema dir>`), or make them text (e.g. prefix 'id')")
        else:
            fix = "fix the values (see the README, Accepted values)"
        problems.append(f"column '{col}' holds {held}, so CsvExampleGen reads it as {inferred}, but schema.pbtxt "
                        f"declares it {rule.csv_type} (features.yaml: {rule.kind}, dtype {rule.dtype}) and the "
                        f"pipeline would fail; {fix}")
    if len(problems) == 1:
        raise DataError(f"{path}: {problems[0]}")
    if problems:
        raise DataError(f"{path}: {len(problems)} columns: " + " | ".join(f"({i}) {p}" for i, p in
                                                                         enumerate(problems, 1)))


def check_frame(frame: pd.DataFrame, cfg: FeatureConfig, path) -> pd.DataFrame:
    """Check every declared column of a CSV file read as text and return the typed frame: numeric and label columns
    float64 (NaN when missing), the time column int64, id columns their canonical text ("" when missing). Stops at
    the first bad cell with the file, row (line) and column, then checks the columns' CsvExampleGen types."""
    out = frame.copy()
    for col, rule in column_rules(cfg).items():
        cells = frame[col].astype(str)
        canonical = {}
        for cell in pd.unique(cells):  # in order of first appearance: the first bad cell is the first bad row
            try:
                canonical[cell] = check_value(rule, cell)
            except InvalidValue as e:
                i = int(np.flatnonzero((cells == cell).to_numpy())[0])
                raise DataError(f"{path}: row {i + 1} (line {line_of(i)}), column '{col}': value {_short(cell)} "
                                f"{e.reason}") from None
        # Map each cell to a value of the column's final type directly: a Series of ints with a missing value would
        # turn float (7 -> 7.0) on the way, which is how int ids lose their digits.
        if rule.kind in ("numeric", "label"):
            out[col] = cells.map({k: np.nan if v is None else float(v) for k, v in canonical.items()}).astype(
                np.float64)
        elif rule.kind == "time":
            out[col] = np.array([canonical[c] for c in cells], dtype=np.int64)
        else:
            out[col] = cells.map({k: "" if v is None else str(v) for k, v in canonical.items()}).astype(object)
    check_csv_types(frame, cfg, path)
    return out
