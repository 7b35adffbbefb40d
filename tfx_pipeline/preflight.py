"""Checks on the input folder before a pipeline starts, so bad input stops with the file, row and column named
(instead of a Beam stack trace minutes later inside the Transform or the Evaluator).

Every file goes through `mdl_tf.data.io.read_split_files`, the loader `mdl-tf train` uses: one header per split, no
byte-order mark, and the value contract of `mdl_tf.values`: each cell must be a value of its column's rule, and each
column must hold what CsvExampleGen will infer as the type schema.pbtxt declares (it infers all integers -> INT,
numbers -> FLOAT, else BYTES). The pipeline adds what only it needs: every eval row labelled for the Evaluator.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mdl_tf.config import FeatureConfig
from mdl_tf.data.io import DataError, read_split_files, warn_unseen_scenarios

SPLITS = ("train", "eval")


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
        rows[split] = 0
        for path, frame in read_split_files(root, split, cfg):
            if split == "train":
                warn_unseen_scenarios(frame, cfg, path)
            if split == "eval":
                for col in cfg.label_columns:
                    if frame[col].isna().any():
                        i = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
                        raise DataError(f"{path}: row {i + 1} (line {i + 2}), column '{col}': the Evaluator needs "
                                        f"every eval row labelled for every task; drop unlabelled rows from the "
                                        f"eval split")
            rows[split] += len(frame)
    return rows
