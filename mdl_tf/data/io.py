"""Dataset files on disk: `<dir>/{train,eval,test}/data.csv` plus `features.yaml`, `schema.pbtxt`, `dataset.json`.

Reading validates against the feature config and stops at the first problem with a message that names the file,
the row and the column. Writing is atomic per file, so an interrupted write never leaves a half CSV behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mdl_tf import config as cfgmod
from mdl_tf.schema import write_schema
from mdl_tf.utils import write_json

SPLITS = ("train", "eval", "test")
DATA_FILE = "data.csv"


class DataError(ValueError):
    """Bad input data; the message names the file, the row and the column."""


def split_path(data_dir, split: str) -> Path:
    return Path(data_dir) / split / DATA_FILE


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


def _line(row_index: int) -> int:
    """1-based line number in the CSV file of 0-based data row `row_index` (the header is line 1)."""
    return row_index + 2


def parse_numbers(frame: pd.DataFrame, col: str, path, allow_empty: bool = True) -> np.ndarray:
    """Column `col` as float64 (NaN for empty cells when allowed); a non-number stops with file, row and column."""
    raw = frame[col].astype(str).str.strip()
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & ((raw != "") | (not allow_empty))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: row {i + 1} (line {_line(i)}), column '{col}': value {frame[col].iloc[i]!r} "
                        f"is not a number")
    return values.to_numpy(dtype=np.float64)


def read_split(data_dir, split: str, cfg: cfgmod.FeatureConfig) -> pd.DataFrame:
    """Read one split and check it against the config. Returns a frame with typed columns:
    id columns as str (empty string when missing), numeric and label columns as float (NaN when missing)."""
    path = split_path(data_dir, split)
    if not path.exists():
        raise DataError(f"{path}: file not found; expected <data dir>/{split}/{DATA_FILE} (make one with "
                        f"`mdl-tf data synth|movielens|aliccp --out DIR`)")
    return read_csv_checked(path, cfg, split)


def read_csv_checked(path, cfg: cfgmod.FeatureConfig, split: str) -> pd.DataFrame:
    """One CSV file of `split`, checked against the config (see read_split)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty; it needs a header line and at least one row") from None
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows")
    missing = [c for c in cfg.required_columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} declared in the feature config are missing from the header")

    numeric_cols = [f.name for f in cfg.features_of_kind("numeric")]
    label_cols = cfg.label_columns
    for col in numeric_cols + label_cols:
        frame[col] = parse_numbers(frame, col, path)
    for col in label_cols:
        vals = frame[col].to_numpy()
        bad = ~np.isnan(vals) & ~np.isin(vals, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: row {i + 1} (line {_line(i)}), column '{col}': label {vals[i]!r} must be 0 or 1 "
                            f"(leave the cell empty when the label is unknown)")
        if split == "train" and np.isnan(vals).all():
            raise DataError(f"{path}: column '{col}': every label is missing; task '{col}' cannot be trained")
    if cfg.time_column:
        frame[cfg.time_column] = parse_numbers(frame, cfg.time_column, path, allow_empty=False).astype(np.int64)
    return frame


def read_info(data_dir) -> dict:
    path = Path(data_dir) / "dataset.json"
    return json.loads(path.read_text()) if path.exists() else {}
