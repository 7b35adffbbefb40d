"""The real Ali-CCP sample (`../shared/data/aliccp_sample/`) mapped onto the feature-config format.

Scenario = column `301` (values 1, 2, 3); tasks click and purchase. Ali-CCP field ids become feature names with an
`f` prefix (`101` -> `f101`, `D508` -> `d508`). The files have no timestamp: row order stands for time. The train
file is the training split; the test file's first half is the eval split and its second half the test split.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from mdl_tf import config as cfgmod
from mdl_tf import values
from mdl_tf.data.io import DataError, parse_column, parse_numbers, write_dataset

TRAIN_FILE, TEST_FILE = "ali_ccp_train_sample.csv", "ali_ccp_test_sample.csv"
LABELS = ("click", "purchase")
SCENARIO = "301"
USER = ["101", "121", "122", "124", "125", "126", "127", "128", "129"]
ITEM = ["205", "206", "207", "210", "216"]
CROSS = ["508", "509", "702", "853"]
BEHAVIOUR = ["109_14", "110_14", "127_14", "150_14"]
DENSE = ["D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"]
IMPORTANT = {"101": ["scenario", "task"], "121": ["scenario"], "205": ["task"], "206": ["task"]}


def _name(col: str) -> str:
    return col.lower() if col.startswith("D") else f"f{col}"


def _features() -> list:
    out = []
    for group, cols in (("user", USER), ("item", ITEM), ("cross", CROSS), ("behaviour", BEHAVIOUR)):
        for c in cols:
            f = {"name": _name(c), "kind": "categorical", "group": group, "dtype": "int"}
            if c in IMPORTANT:
                f["important_for"] = IMPORTANT[c]
            out.append(f)
    for c in DENSE:
        out.append({"name": _name(c), "kind": "numeric", "group": "cross" if c[1:] in CROSS else "behaviour"})
    out.append({"name": _name(SCENARIO), "kind": "categorical", "group": "item", "dtype": "int"})
    return out


FEATURES_YAML = {
    "name": "aliccp", "version": 1, "embedding_dim": 16,
    "token_groups": ["user", "item", "cross", "behaviour"],
    "scenario": {"column": _name(SCENARIO), "values": ["1", "2", "3"], "dtype": "int"},
    "tasks": [{"name": t, "label": t} for t in LABELS],
    "user_column": _name("101"),
    "features": _features(),
}


def feature_config() -> cfgmod.FeatureConfig:
    return cfgmod.from_dict(FEATURES_YAML, "aliccp")


def read_source(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: file not found; --src must be the folder holding {TRAIN_FILE} and {TEST_FILE}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    required = list(LABELS) + [SCENARIO] + USER + ITEM + CROSS + BEHAVIOUR + DENSE
    missing = [c for c in required if c not in frame.columns]
    if missing:
        kind = ("label" if set(missing) & set(LABELS) else "scenario" if SCENARIO in missing else "feature")
        raise DataError(f"{path}: {kind} column(s) {missing} missing from the header")
    # Every cell by the value contract of the column it becomes: ids exact int64 (never through float), labels 0/1.
    rules = values.column_rules(feature_config())
    out = pd.DataFrame(index=frame.index)
    for c in USER + ITEM + CROSS + BEHAVIOUR + [SCENARIO]:
        rule = dataclasses.replace(rules[_name(c)], required=True)
        out[_name(c)] = [str(v) for v in parse_column(frame, c, rule, path)]
    for c in DENSE:
        out[_name(c)] = parse_numbers(frame, c, path, allow_empty=True)
    for c in LABELS:
        out[c] = parse_column(frame, c, dataclasses.replace(rules[c], required=True), path).astype(np.int64)
    return out


def write(out_dir, src) -> dict:
    src = Path(src)
    train, test = read_source(src / TRAIN_FILE), read_source(src / TEST_FILE)
    half = len(test) // 2
    splits = {"train": train, "eval": test.iloc[:half], "test": test.iloc[half:]}
    return write_dataset(out_dir, splits, feature_config(), provenance={"source": str(src)})
