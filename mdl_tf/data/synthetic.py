"""The embedded default dataset: seeded synthetic multi-scenario, multi-task ranking logs.

The labels carry structure that only a scenario- and task-aware model can exploit:

* three scenarios with unequal traffic (home 70%, feed 20%, search 10%); a share of rows belongs to two scenarios
  (the membership column), and their click propensity mixes both scenarios' functions;
* two tasks in a cascade: purchase only happens on clicked rows, with a much lower rate;
* the same features act differently per scenario and per task: user-item affinity goes through a different bilinear
  map in each scenario, price raises clicks in feed but lowers them in search, age x price is an interaction whose
  sign flips between scenarios, the behaviour sequence matters mostly in search, and purchase has its own map;
* high-cardinality user/item ids (item ids hashed into buckets, no vocabulary), numeric, multi-hot tags and a
  recent-clicks sequence; users and items keep joining over time, so the test split (the latest rows) holds ids
  never seen in training, and a new surface ("live") appears in the test split only.

`generate()` also returns the oracle click logits with and without scenario knowledge, so tests can check that a
scenario-blind model is measurably worse.

**Consecutive days** (`start_day`, `drift`; `mdl-tf data synth --start-day D --drift X`): day 0 is the default
dataset (30 days of history). Day D >= 1 is the D-th day after it, in the same world (the same seed gives the same
users, items and scenario maps): its timestamps lie in that day; each day `DAILY_NEW_USERS` / `DAILY_NEW_ITEMS` of
new users and items join (drawn from their own per-day seed, so day D's newcomers are the same whichever day is
generated) and the oldest `DAILY_CHURN` of users and items leave, so a day's vocabulary differs from the previous
one's in both directions; and the click function drifts: every scenario's bilinear map moves towards its own random
direction and its base rate shifts, by `drift` per day. Splits (train/eval/test, by time) are within the day.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from mdl_tf import config as cfgmod
from mdl_tf.errors import UserError

SCENARIOS = ("home", "feed", "search")
TRAFFIC = (0.70, 0.20, 0.10)
UNSEEN_SCENARIO = "live"
SPLITS = ("train", "eval", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
LATENT = 4
HISTORY = 10
ITEM_HASH_BUCKETS = 4096  # item_id and hist_items (hashed): 2x the 2,000 items of 100k rows (rows / 50)
DAY = 86400
HISTORY_DAYS = 30           # day 0 spans this many days; day D >= 1 is the day [30 + D - 1, 30 + D)
DAILY_NEW_USERS = 0.08      # per day, as a share of the day-0 users (items: the same share)
DAILY_NEW_ITEMS = 0.08
DAILY_CHURN = 0.05          # per day, the oldest users and items (share of day-0 counts) stop appearing
DRIFT = 0.15                # per day: how far each scenario's click map and base rate move

FEATURES_YAML = {
    "name": "synthetic",
    "version": 1,
    "embedding_dim": 16,
    "token_groups": ["user", "item", "behaviour", "context"],
    "scenario": {"column": "scenario", "values": list(SCENARIOS), "membership_column": "scenarios",
                 "separator": "|"},
    "tasks": [{"name": "click", "label": "click"}, {"name": "purchase", "label": "purchase"}],
    "user_column": "user_id",
    "time_column": "ts",
    "slice_columns": ["device"],
    "features": [
        {"name": "user_id", "kind": "categorical", "group": "user", "important_for": ["scenario", "task"],
         "min_frequency": 2},
        {"name": "user_age", "kind": "numeric", "group": "user"},
        {"name": "user_segment", "kind": "categorical", "group": "user", "important_for": ["scenario"]},
        # Hashed ids: no vocabulary to fit (see hash_buckets in mdl_tf/config.py); the history shares the table.
        {"name": "item_id", "kind": "categorical", "group": "item", "important_for": ["task"],
         "hash_buckets": ITEM_HASH_BUCKETS},
        {"name": "item_category", "kind": "categorical", "group": "item", "important_for": ["task"]},
        {"name": "item_price", "kind": "numeric", "group": "item"},
        {"name": "item_tags", "kind": "multi_hot", "group": "item", "max_len": 4, "separator": "|"},
        {"name": "hist_items", "kind": "sequence", "group": "behaviour", "max_len": HISTORY, "separator": "|",
         "shares_vocab_with": "item_id", "hash_buckets": ITEM_HASH_BUCKETS},
        {"name": "hist_len", "kind": "numeric", "group": "behaviour"},
        {"name": "scenario", "kind": "categorical", "group": "context"},
        {"name": "device", "kind": "categorical", "group": "context"},
        {"name": "hour", "kind": "categorical", "group": "context"},
    ],
}


def feature_config() -> cfgmod.FeatureConfig:
    return cfgmod.from_dict(FEATURES_YAML, "synthetic")


def entity_counts(rows: int) -> tuple:
    """(users, items) of day 0 for `rows` rows: one user per 25 rows (at least 200), one item per 50 (at least 100)."""
    return max(200, rows // 25), max(100, rows // 50)


@dataclasses.dataclass
class SyntheticData:
    frame: pd.DataFrame            # all rows in time order, with a `split` column
    click_logit: np.ndarray        # oracle click logit (scenario-aware)
    blind_click_logit: np.ndarray  # the best the generator's own function can do without the scenario


@dataclasses.dataclass(frozen=True)
class _ScenarioParams:
    base: float
    affinity: float
    price: float
    age_x_price: float
    sequence: float


# Per-scenario click parameters: deliberately conflicting signs so a pooled model cannot fit all scenarios.
_CLICK = {
    "home": _ScenarioParams(base=-1.6, affinity=1.0, price=-0.2, age_x_price=0.9, sequence=0.4),
    "feed": _ScenarioParams(base=-2.0, affinity=1.2, price=0.9, age_x_price=-0.9, sequence=0.2),
    "search": _ScenarioParams(base=-0.9, affinity=0.6, price=-1.2, age_x_price=0.0, sequence=2.0),
}
_PURCHASE_BASE = {"home": -1.8, "feed": -2.4, "search": -1.0}


def _bilinear_maps(rng: np.random.Generator) -> dict:
    """One LATENT x LATENT map per scenario and one for purchase: the same ids mean different things."""
    maps = {}
    for name in (*SCENARIOS, "purchase"):
        q, _ = np.linalg.qr(rng.normal(size=(LATENT, LATENT)))
        maps[name] = q * 1.2
    maps[UNSEEN_SCENARIO] = np.mean([maps[s] for s in SCENARIOS], axis=0)
    return maps


def _drifted(maps: dict, seed: int, day: int, drift: float) -> tuple:
    """(maps, click base shifts) of `day`: each scenario's map moves towards its own random direction by
    drift x day (re-orthogonalised, same scale), and its base logit by drift x day x a fixed random sign."""
    if day == 0 or drift == 0:
        return maps, {s: 0.0 for s in SCENARIOS}
    rng = np.random.default_rng([seed, 99])
    out, shift = dict(maps), {}
    for s in (*SCENARIOS, "purchase"):
        q, _ = np.linalg.qr(maps[s] / 1.2 + drift * day * rng.normal(size=(LATENT, LATENT)))
        out[s] = q * 1.2
    for s in SCENARIOS:
        shift[s] = drift * day * float(rng.choice([-1.0, 1.0]))
    out[UNSEEN_SCENARIO] = np.mean([out[s] for s in SCENARIOS], axis=0)
    return out, shift


def generate(rows: int = 50_000, seed: int = 0, start_day: int = 0, drift: float = DRIFT) -> SyntheticData:
    """`rows` rows of day `start_day` (0: the 30-day history; see the module docstring) with per-day `drift`.

    Raises UserError for fewer than 1000 rows, a negative day or a negative drift."""
    if rows < 1000:
        raise UserError(f"rows={rows}: the synthetic generator needs at least 1000 rows to fill three splits; "
                        f"ask for more (mdl-tf data synth --rows 1000)")
    if start_day < 0 or drift < 0:
        raise UserError(f"start_day={start_day}, drift={drift}: both must be >= 0 (day 0 is the history, day 1 the "
                        f"next day; drift 0 keeps the click function fixed)")
    rng = np.random.default_rng(seed)
    n_users, n_items = entity_counts(rows)
    n_tags, n_categories = 40, 20

    # Entities. Users and items keep joining: an entity with index i exists from time i / count onward (a warm
    # start of 60% exists at time 0), so the latest rows (the test split) meet ids never seen in training.
    # Latent tastes come mostly from low-cardinality attributes (segment, category), plus an id-specific part,
    # so the structure is learnable from a few epochs while ids still matter.
    user_segment = rng.integers(0, 8, size=n_users)
    item_category = rng.integers(0, n_categories, size=n_items)
    segment_vec = rng.normal(size=(8, LATENT))
    user_vec = segment_vec[user_segment] + 0.4 * rng.normal(size=(n_users, LATENT))
    category_vec = rng.normal(size=(n_categories, LATENT))
    item_vec = category_vec[item_category] + 0.4 * rng.normal(size=(n_items, LATENT))
    user_age = rng.uniform(18, 70, size=n_users).round()
    item_price = np.exp(rng.normal(3.0, 0.8, size=n_items)).round(2)
    item_tags = [rng.choice(n_tags, size=rng.integers(1, 5), replace=False) for _ in range(n_items)]
    maps = _bilinear_maps(rng)
    base_users, base_items = n_users, n_items
    for day in range(1, start_day + 1):  # the users and items that joined on each later day, each from its own seed
        drng = np.random.default_rng([seed, day])
        nu, ni = max(1, round(base_users * DAILY_NEW_USERS)), max(1, round(base_items * DAILY_NEW_ITEMS))
        seg = drng.integers(0, 8, size=nu)
        cat = drng.integers(0, n_categories, size=ni)
        user_segment = np.concatenate([user_segment, seg])
        item_category = np.concatenate([item_category, cat])
        user_vec = np.concatenate([user_vec, segment_vec[seg] + 0.4 * drng.normal(size=(nu, LATENT))])
        item_vec = np.concatenate([item_vec, category_vec[cat] + 0.4 * drng.normal(size=(ni, LATENT))])
        user_age = np.concatenate([user_age, drng.uniform(18, 70, size=nu).round()])
        item_price = np.concatenate([item_price, np.exp(drng.normal(3.0, 0.8, size=ni)).round(2)])
        item_tags += [drng.choice(n_tags, size=drng.integers(1, 5), replace=False) for _ in range(ni)]
    n_users, n_items = len(user_segment), len(item_category)
    maps, base_shift = _drifted(maps, seed, start_day, drift)
    if start_day:
        rng = np.random.default_rng([seed, start_day, 1])  # the day's own rows

    t = np.sort(rng.uniform(0.0, 1.0, size=rows))
    if start_day == 0:
        ts = (1_700_000_000 + t * HISTORY_DAYS * DAY).astype(np.int64)
    else:
        ts = (1_700_000_000 + (HISTORY_DAYS + start_day - 1 + t) * DAY).astype(np.int64)
    split_idx = np.searchsorted(np.cumsum(SPLIT_FRACTIONS), np.arange(rows) / rows, side="right")
    split = np.array(SPLITS)[np.minimum(split_idx, 2)]

    def joined(count: int, warm: float = 0.6, base: int = 0) -> np.ndarray:
        if start_day:  # a later day: everyone who joined so far, minus the oldest who left
            lo = min(count - 1, int(start_day * DAILY_CHURN * base))
            return lo + np.minimum((rng.uniform(size=rows) ** 1.3 * (count - lo)).astype(int), count - lo - 1)
        avail = np.maximum(1, np.floor(count * np.clip(warm + (1 - warm) * t / 0.8, 0, 1)).astype(int))
        # Entities joining during the test period are only reachable there.
        return np.minimum((rng.uniform(size=rows) ** 1.3 * avail).astype(int), count - 1)

    users, items = joined(n_users, base=base_users), joined(n_items, base=base_items)
    scen_idx = rng.choice(len(SCENARIOS), size=rows, p=TRAFFIC)
    scenario = np.array(SCENARIOS, dtype=object)[scen_idx]
    second = np.where(rng.uniform(size=rows) < 0.08, (scen_idx + rng.integers(1, 3, size=rows)) % 3, -1)
    is_new_surface = (split == "test") & (rng.uniform(size=rows) < 0.03)
    scenario[is_new_surface] = UNSEEN_SCENARIO
    second[is_new_surface] = -1
    membership = np.array([s if j < 0 else f"{s}|{SCENARIOS[j]}" for s, j in zip(scenario, second)], dtype=object)
    device = rng.choice(np.array(["ios", "android", "web"]), size=rows, p=[0.45, 0.45, 0.10])
    hour = (((ts - 1_700_000_000) / 3600) % 24).astype(int) if start_day else ((t * 30 * 24) % 24).astype(int)

    age_z = (user_age[users] - 44.0) / 15.0
    price_z = (np.log(item_price[items]) - 3.0) / 0.8
    affinity = {s: np.einsum("bi,ij,bj->b", user_vec[users], m, item_vec[items]) / 2.0 for s, m in maps.items()}

    click = np.zeros(rows, dtype=np.int64)
    purchase = np.zeros(rows, dtype=np.int64)
    click_logit = np.zeros(rows)
    blind_logit = np.zeros(rows)
    hist_items = np.empty(rows, dtype=object)
    hist_len = np.zeros(rows)
    history: dict = {}
    uniforms = rng.uniform(size=(rows, 2))
    mean_params = {f: float(np.dot(TRAFFIC, [getattr(_CLICK[s], f) for s in SCENARIOS]))
                   for f in ("base", "affinity", "price", "age_x_price", "sequence")}
    blind_map = sum(w * maps[s] for w, s in zip(TRAFFIC, SCENARIOS))

    day_params = {s: {**dataclasses.asdict(p), "base": p.base + base_shift[s]} for s, p in _CLICK.items()}

    def logit(p, aff, seq_sim, i):
        return (p["base"] + p["affinity"] * aff + p["price"] * price_z[i] + p["age_x_price"] * age_z[i] * price_z[i]
                + p["sequence"] * seq_sim)

    for i in range(rows):
        u, it = users[i], items[i]
        past = history.get(u, [])
        hist_items[i] = "|".join(f"i{x}" for x in past[-HISTORY:])
        hist_len[i] = len(past)
        seq_sim = float(np.mean(item_vec[past[-HISTORY:]] @ item_vec[it]) / 2.0) if past else 0.0
        members = [scenario[i]] + ([SCENARIOS[second[i]]] if second[i] >= 0 else [])
        params = [day_params.get(s, mean_params) for s in members]
        click_logit[i] = np.mean([logit(p, affinity[s][i], seq_sim, i) for p, s in zip(params, members)])
        blind_aff = float(user_vec[u] @ blind_map @ item_vec[it] / 2.0)
        blind_logit[i] = logit(mean_params, blind_aff, seq_sim, i)
        if uniforms[i, 0] < 1 / (1 + np.exp(-click_logit[i])):
            click[i] = 1
            history.setdefault(u, []).append(it)
            pl = (_PURCHASE_BASE.get(scenario[i], -1.8) + 1.3 * affinity["purchase"][i] - 1.0 * price_z[i]
                  + (0.8 * age_z[i] if scenario[i] == "search" else -0.3 * age_z[i]))
            purchase[i] = int(uniforms[i, 1] < 1 / (1 + np.exp(-pl)))

    frame = pd.DataFrame({
        "ts": ts,
        "user_id": [f"u{x}" for x in users],
        "user_age": user_age[users],
        "user_segment": [f"seg{x}" for x in user_segment[users]],
        "item_id": [f"i{x}" for x in items],
        "item_category": [f"c{x}" for x in item_category[items]],
        "item_price": item_price[items],
        "item_tags": ["|".join(f"t{x}" for x in item_tags[x]) for x in items],
        "hist_items": hist_items,
        "hist_len": hist_len,
        "scenario": scenario,
        "scenarios": membership,
        "device": device,
        "hour": [f"h{x:02d}" for x in hour],
        "click": click,
        "purchase": purchase,
        "split": split,
    })
    return SyntheticData(frame=frame, click_logit=click_logit, blind_click_logit=blind_logit)


def write(out_dir, rows: int = 50_000, seed: int = 0, start_day: int = 0, drift: float = DRIFT) -> dict:
    """Write train/eval/test CSVs plus the dataset's features.yaml and schema.pbtxt into `out_dir` (day
    `start_day` of the world `seed`; see `generate`)."""
    from mdl_tf.data.io import write_dataset

    data = generate(rows=rows, seed=seed, start_day=start_day, drift=drift)
    splits = {s: data.frame[data.frame["split"] == s].drop(columns="split") for s in SPLITS}
    provenance = {"generator": "mdl_tf.data.synthetic", "rows": rows, "seed": seed}
    if start_day:
        provenance.update(start_day=start_day, drift=drift)
    return write_dataset(out_dir, splits, feature_config(), provenance=provenance)
