"""Checks on the input folder before a pipeline starts, so bad input stops with the file, row and column named
(instead of a Beam stack trace minutes later inside the Transform or the Evaluator).

CsvExampleGen infers each column's type from its values (all integers -> INT, numbers -> FLOAT, else BYTES), so a
column must hold what `features.yaml` declares: an id column of bare numbers needs `dtype: int`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mdl_tf.config import FeatureConfig
from mdl_tf.data.io import DataError, read_csv_checked

SPLITS = ("train", "eval")


def _integers(values: pd.Series) -> np.ndarray:
    return values.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool)


def check_inferred_types(frame: pd.DataFrame, cfg: FeatureConfig, path) -> None:
    dtypes = {f.name: f.dtype for f in cfg.features}
    dtypes[cfg.scenario.column] = cfg.scenario.dtype
    for col, dtype in dtypes.items():
        if dtype == "float":
            continue
        cells = frame[col].astype(str)
        cells = cells[cells != ""]
        if cells.empty:
            continue
        ints = _integers(cells)
        if dtype == "string" and ints.all():
            raise DataError(f"{path}: column '{col}' holds only integers, so CsvExampleGen reads it as INT, but "
                            f"features.yaml declares it a string; set `dtype: int` for '{col}' (and regenerate "
                            f"schema.pbtxt with `mdl-tf schema export`)")
        if dtype == "int" and not ints.all():
            i = int(np.flatnonzero(~ints)[0])
            raise DataError(f"{path}: column '{col}' is declared `dtype: int` but holds {cells.iloc[i]!r}; "
                            f"fix the value or declare the column a string")


def check_input(data_root, cfg: FeatureConfig, input_format: str = "csv") -> dict:
    """Validate `<data_root>/{train,eval}/`; returns {split: rows}. Raises DataError naming the problem."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: input folder not found")
    if input_format != "csv":
        for split in SPLITS:
            if not list((root / split).glob("*.tfrecord*")):
                raise DataError(f"{root / split}: no *.tfrecord* files; the pipeline needs train/ and eval/ splits")
        return {}
    rows = {}
    for split in SPLITS:
        files = sorted((root / split).glob("*.csv"))
        if not files:
            raise DataError(f"{root / split}: no CSV files; the pipeline reads <data>/train/*.csv and "
                            f"<data>/eval/*.csv (make them with `mdl-tf data synth --out {root}`)")
        rows[split] = 0
        for path in files:
            frame = read_csv_checked(path, cfg, split)
            check_inferred_types(frame, cfg, path)
            if split == "eval":
                for col in cfg.label_columns:
                    if frame[col].isna().any():
                        i = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
                        raise DataError(f"{path}: row {i + 1}, column '{col}': the Evaluator needs every eval row "
                                        f"labelled for every task; drop unlabelled rows from the eval split")
            rows[split] += len(frame)
    return rows
