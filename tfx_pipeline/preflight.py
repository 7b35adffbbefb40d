"""Checks on the input folder before a pipeline starts, so bad input stops with the file, row and column named
(instead of a Beam stack trace minutes later inside the Transform or the Evaluator).

Every file goes through `mdl_tf.data.io.read_csv_checked`, the loader `mdl-tf train` uses, which applies the value
contract of `mdl_tf.values`: each cell must be a value of its column's rule, and each column must hold what
CsvExampleGen will infer as the type schema.pbtxt declares (it infers all integers -> INT, numbers -> FLOAT, else
BYTES). The pipeline adds what only it needs: one header per split and every eval row labelled for the Evaluator.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mdl_tf.config import FeatureConfig
from mdl_tf.data.io import DataError, read_csv_checked

SPLITS = ("train", "eval")


def _header(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.readline().rstrip("\r\n")


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
            if _header(path) != _header(files[0]):
                raise DataError(f"{path}: header differs from {files[0].name}'s; CsvExampleGen needs the same header "
                                f"(same columns in the same order) in every file of a split")
            frame = read_csv_checked(path, cfg, split)
            if split == "eval":
                for col in cfg.label_columns:
                    if frame[col].isna().any():
                        i = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
                        raise DataError(f"{path}: row {i + 1} (line {i + 2}), column '{col}': the Evaluator needs "
                                        f"every eval row labelled for every task; drop unlabelled rows from the "
                                        f"eval split")
            rows[split] += len(frame)
    return rows
