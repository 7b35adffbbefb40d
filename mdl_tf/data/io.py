"""Dataset files on disk: `<dir>/{train,eval,test}/*.csv` plus `features.yaml`, `schema.pbtxt`, `dataset.json`.

A split is every CSV file of its folder, read in name order (as the pipeline's CsvExampleGen reads `train/*.csv`), all
with one header; the writers here write one file per split, `data.csv`.

Reading validates against the feature config with the value contract of `mdl_tf.values` (the same rules the pipeline's
pre-run check, the serving client and the development server apply) and stops at the first problem with a message
that names the file, the row and the column. Writing is atomic per file, so an interrupted write never leaves a half
CSV behind.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mdl_tf import config as cfgmod
from mdl_tf import values
from mdl_tf.errors import DataError
from mdl_tf.schema import write_schema
from mdl_tf.utils import write_json

SPLITS = ("train", "eval", "test")
log = logging.getLogger(__name__)
DATA_FILE = "data.csv"
BOM = b"\xef\xbb\xbf"


def split_path(data_dir, split: str) -> Path:
    """The file the writers here write for `split`."""
    return Path(data_dir) / split / DATA_FILE


def split_files(data_dir, split: str) -> list:
    """The CSV files of `split`, in name order (empty when the split folder is missing or holds none)."""
    return sorted((Path(data_dir) / split).glob("*.csv"))


def has_split(data_dir, split: str) -> bool:
    return bool(split_files(data_dir, split))


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_dataset(out_dir, splits: dict, cfg: cfgmod.FeatureConfig, provenance: dict) -> dict:
    out = Path(out_dir)
    counts = {}
    for name, frame in splits.items():
        missing = [c for c in cfg.required_columns if c not in frame.columns]
        if missing:
            raise DataError(f"split '{name}': columns {missing} required by the feature config are missing")
        _atomic_csv(frame, split_path(out, name))
        counts[name] = int(len(frame))
    cfgmod.dump(cfg, out / cfgmod.CONFIG_FILE)
    write_schema(cfg, out)
    info = {"name": cfg.name, **provenance, "rows": counts}  # per-split counts win over a generator's total
    write_json(out / "dataset.json", info)
    return info


def parse_column(frame: pd.DataFrame, col: str, rule: values.ColumnRule, path) -> pd.Series:
    """Column `col` of a source file checked cell by cell with `rule` (`mdl_tf.values`): the canonical values
    (None when missing); the first bad cell stops with file, row (line) and column."""
    cells = frame[col].astype(str)
    parsed = {}
    for cell in pd.unique(cells):  # in order of first appearance: the first bad cell is the first bad row
        try:
            parsed[cell] = values.check_value(rule, cell)
        except values.InvalidValue as e:
            i = int(np.flatnonzero((cells == cell).to_numpy())[0])
            raise DataError(f"{path}: row {i + 1} (line {values.line_of(i)}), column '{col}': value "
                            f"{frame[col].iloc[i]!r} {e.reason}") from None
    return pd.Series([parsed[c] for c in cells], index=frame.index, dtype=object)


def parse_numbers(frame: pd.DataFrame, col: str, path, allow_empty: bool = True) -> np.ndarray:
    """Column `col` of a source file as float64 (NaN for empty cells when allowed), by the numeric rule of
    `mdl_tf.values`; a non-number stops with file, row and column."""
    rule = values.ColumnRule(col, "numeric", "float", required=not allow_empty)
    parsed = parse_column(frame.assign(**{col: frame[col].astype(str).str.strip()}), col, rule, path)
    return np.array([np.nan if v is None else v for v in parsed], dtype=np.float64)


def read_split(data_dir, split: str, cfg: cfgmod.FeatureConfig) -> pd.DataFrame:
    """Read one split (every CSV file of `<data_dir>/<split>/`) and check it against the config
    (`mdl_tf.values.check_frame`). Returns a frame with typed columns: id columns as their canonical text (empty string
    when missing; int ids without sign or leading zeros), numeric and label columns as float (NaN when missing), the
    time column as int64. Raises DataError naming the file, row and column of the first problem."""
    frames = [frame for _, frame in read_split_files(data_dir, split, cfg)]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def read_split_files(data_dir, split: str, cfg: cfgmod.FeatureConfig):
    """Yield (path, checked frame) for every CSV file of a split, one at a time (a split larger than memory is still
    checked by the pipeline's pre-run check); see read_split. The files must share one header, as CsvExampleGen
    reads them with the first one's. After the last file, a training split with a task none of its rows labels is
    refused (a file written before a task existed is fine when another file labels it)."""
    files = split_files(data_dir, split)
    if not files:
        raise DataError(f"{Path(data_dir) / split}: no CSV file; expected <data dir>/{split}/*.csv, one or more "
                        f"files with one header (make an example with `mdl-tf data synth --out DIR`)")
    first = None
    labelled = dict.fromkeys(cfg.label_columns, 0)
    for path in files:
        _refuse_byte_order_mark(path)  # before the header comparison: the mark would look like another header
        header = _header(path)
        if first is not None and header != first:
            raise DataError(f"{path}: header differs from {files[0].name}'s; every file of a split needs the same "
                            f"header (the same columns in the same order: CsvExampleGen reads them all with one)")
        first = header
        frame = read_csv_checked(path, cfg)
        for col in labelled:
            labelled[col] += int(frame[col].notna().sum())
        yield path, frame
    unlabelled = [col for col, n in labelled.items() if n == 0]
    if split == "train" and unlabelled:
        where = files[0] if len(files) == 1 else Path(data_dir) / split
        raise DataError(f"{where}: column '{unlabelled[0]}': every label is missing; task '{unlabelled[0]}' cannot be "
                        f"trained")


def _refuse_byte_order_mark(path) -> None:
    with open(path, "rb") as fh:
        if fh.read(3) == BOM:  # pandas would skip it; CsvExampleGen keeps it in the first column's name
            raise DataError(f"{path}: starts with a UTF-8 byte-order mark (Excel's \"CSV UTF-8\" writes one); the "
                            f"pipeline would read the first column as '\\ufeff' + its name and lose it. Save the file "
                            f"without it (plain UTF-8), e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' {path}")


def _header(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.readline().rstrip("\r\n")


def _check_field_counts(path, width: int) -> None:
    """Every record has the header's number of fields (pandas pads short rows; CsvExampleGen fails on them)."""
    with open(path, newline="", encoding="utf-8") as fh:
        for i, record in enumerate(csv.reader(fh)):
            if record and len(record) != width and i > 0:
                raise DataError(f"{path}: row {i} has {len(record)} fields, the header {width}; CsvExampleGen refuses "
                                f"such a file (write an empty field for a missing value)")


def read_csv_checked(path, cfg: cfgmod.FeatureConfig) -> pd.DataFrame:
    """One CSV file, checked against the config (see read_split; a split's own rules are read_split_files')."""
    _refuse_byte_order_mark(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty; it needs a header line and at least one row") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: not a valid CSV file ({str(e).strip()}); every row needs as many fields as the "
                        f"header") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows")
    _check_field_counts(path, len(frame.columns))
    missing = [c for c in cfg.required_columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} declared in the feature config are missing from the header")

    return values.check_frame(frame, cfg, path)


def warn_unseen_scenarios(frame: pd.DataFrame, cfg: cfgmod.FeatureConfig, where) -> dict:
    """Warn when training rows carry a scenario value `scenario.values` does not list (a surface added to the data
    and not to features.yaml): such a row trains the global token only, its own scenario token never exists. Returns
    {value: rows}. Unseen scenarios are expected at serving and in test splits, not in training data."""
    column = frame[cfg.scenario.column].astype(str)
    unseen = column[~column.isin(cfg.scenario.values)].value_counts()
    counts = {str(v): int(n) for v, n in unseen.items()}
    if counts:
        shown = ", ".join(f"'{v}': {n:,}" for v, n in list(counts.items())[:5]) + (", ..." if len(counts) > 5 else "")
        log.warning("%s: %s of %s rows (%.1f%%) have a scenario that features.yaml's scenario.values %s does not list "
                    "(%s); they train the global token only: add the value(s) to scenario.values (and regenerate "
                    "schema.pbtxt) or drop those rows", where, f"{int(unseen.sum()):,}", f"{len(frame):,}",
                    100 * unseen.sum() / len(frame), list(cfg.scenario.values), shown)
    return counts


def read_info(data_dir) -> dict:
    path = Path(data_dir) / "dataset.json"
    return json.loads(path.read_text()) if path.exists() else {}
