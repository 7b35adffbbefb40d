"""MovieLens-1M loader: the published domain counts, label rates, split sizes and time safety of the history."""
import numpy as np
import pandas as pd
import pytest

from mdl_tf.data import movielens1m
from mdl_tf.data.io import DataError


@pytest.fixture(scope="module")
def frames():
    src = movielens1m.fetch()
    return {p: movielens1m.build_frame(src, p) for p in movielens1m.PROTOCOLS}


def test_domains_labels_and_features_match_the_published_setup(frames):
    frame = frames["random"]
    assert len(frame) == 1_000_209 and frame.user_id.nunique() == 6_040 and frame.item_id.nunique() == 3_706
    # Scenario-Wise-Rec's domains: ages {1, 18} -> d0, {25} -> d1, {35, 45, 50, 56} -> d2.
    assert frame.age_group.value_counts().to_dict() == {"25to34": 395_556, "35plus": 393_906, "under25": 210_747}
    # click = rating > 3, like = rating > 4 (rates of the released ratings: 4 and 5 are 57.5%, 5 is 22.6%).
    assert frame.click.mean() == pytest.approx(575_281 / 1_000_209)
    assert frame.like.mean() == pytest.approx(226_310 / 1_000_209)
    assert ((frame.like == 1) <= (frame.click == 1)).all()
    assert frame.user_id.str.fullmatch(r"\d+").all() and set(frame.age) == {1, 18, 25, 35, 45, 50, 56}
    genres = frame.genres.str.split("|")
    assert genres.map(len).between(1, 6).all()
    cfg = movielens1m.feature_config("random")
    assert set(cfg.required_columns) <= set(frame.columns) and "hist_items" not in frame
    assert not set(cfg.label_columns) & set(cfg.raw_feature_columns)


def test_random_split_sizes_and_seed(frames):
    splits = movielens1m.random_split(frames["random"])
    assert {k: len(v) for k, v in splits.items()} == {"train": 800_167, "eval": 100_021, "test": 100_021}
    idx = [set(v.index) for v in splits.values()]
    assert not (idx[0] & idx[1] or idx[0] & idx[2] or idx[1] & idx[2])
    again = movielens1m.random_split(frames["random"])
    assert all(again[k].index.equals(splits[k].index) for k in splits)  # seeded: the same split every time
    # Random, not by time: every split spans (nearly) the whole period.
    assert splits["test"].ts.min() < splits["train"].ts.quantile(0.01)


def test_temporal_split_and_history_never_reach_forward(frames):
    frame = frames["temporal"]
    splits = movielens1m.time_split(frame)
    assert {k: len(v) for k, v in splits.items()} == {"train": 800_167, "eval": 100_021, "test": 100_021}
    assert splits["train"].ts.max() <= splits["eval"].ts.min() <= splits["eval"].ts.max() <= splits["test"].ts.min()
    first_seen = {}
    for u, it, t in zip(frame.user_id, frame.item_id, frame.ts):
        first_seen.setdefault((u, it), t)
    sample = frame.sample(3000, random_state=0)
    for u, t, hist, n in zip(sample.user_id, sample.ts, sample.hist_items, sample.hist_len):
        items = [i for i in hist.split("|") if i]
        assert len(items) == min(int(n), movielens1m.HISTORY)
        for it in items:
            assert first_seen[(u, it)] < t
    # hist_len counts every earlier event of the user (not only the last HISTORY).
    user = frame[frame.user_id == frame.user_id.iloc[-1]]
    assert user.hist_len.iloc[-1] == (user.ts < user.ts.iloc[-1]).sum()


def test_write_and_cli_errors(tmp_path, frames):
    from mdl_tf.cli import main

    info = movielens1m.write(tmp_path / "ml1m", protocol="temporal")
    assert info["rows"] == {"train": 800_167, "eval": 100_021, "test": 100_021}
    assert info["protocol"] == "temporal"
    with pytest.raises(DataError, match=r"protocol 'daily' is not one of \('random', 'temporal'\)"):
        movielens1m.write(tmp_path / "x", protocol="daily")
    assert main(["data", "movielens", "--out", str(tmp_path / "y"), "--protocol", "random"]) == 2


def test_bad_source_rows_are_named(tmp_path):
    src = movielens1m.fetch()
    users = pd.read_csv(src / "ml-1m.user", sep="\t", dtype=str, keep_default_na=False)
    users.iloc[3, 1] = "30"
    for name in ("ml-1m.inter", "ml-1m.item"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    users.to_csv(tmp_path / "ml-1m.user", sep="\t", index=False)
    with pytest.raises(DataError, match=r"ml-1m.user: row 4, column 'age': 30 is not one of MovieLens-1M's age codes"):
        movielens1m.build_frame(tmp_path)
    (tmp_path / "ml-1m.user").unlink()
    with pytest.raises(DataError, match=r"ml-1m.user: file not found"):
        movielens1m.build_frame(tmp_path)


def test_earlier_counts_and_sums_see_only_strictly_earlier_training_events():
    from mdl_tf.data.priors import earlier_counts_and_sums, smoothed_rates

    rng = np.random.default_rng(3)
    tk, tt = rng.integers(0, 5, 400), rng.integers(0, 30, 400)  # many ties in time
    tl = rng.integers(0, 2, (400, 2)).astype(float)
    qk, qt = rng.integers(0, 6, 300), rng.integers(-2, 33, 300)  # key 5 has no training event
    events, labelled, sums = earlier_counts_and_sums(tk, tt, tl, qk, qt)
    for i in range(300):
        mine = (tk == qk[i]) & (tt < qt[i])
        assert events[i] == mine.sum() and labelled[i].tolist() == [mine.sum()] * 2
        assert sums[i].tolist() == tl[mine].sum(0).tolist()
    rates = smoothed_rates(labelled, sums, [0.5, 0.2], smoothing=20)
    assert np.allclose(rates[events == 0], [0.5, 0.2])
    assert ((rates >= 0) & (rates <= 1)).all()
    # Unknown labels (NaN) count as events but neither as labelled nor in the sums, and stay within their key; the
    # timestamp unit does not matter (nanoseconds since 1970 order the same as the raw integers).
    nan = tl.copy()
    nan[::7, 0] = np.nan
    epoch_ns = 1_700_000_000 * 10**9
    events_n, labelled_n, sums_n = earlier_counts_and_sums(tk, tt.astype(np.int64) * 10**9 + epoch_ns, nan, qk,
                                                           qt.astype(np.int64) * 10**9 + epoch_ns)
    assert (events_n == events).all() and (labelled_n[:, 1] == labelled[:, 1]).all()
    for i in range(300):
        mine = (tk == qk[i]) & (tt < qt[i]) & np.isfinite(nan[:, 0])
        assert labelled_n[i, 0] == mine.sum() and sums_n[i, 0] == nan[mine, 0].sum()
    # No training events at all: every count is 0, every rate the mean.
    empty = earlier_counts_and_sums([], [], np.zeros((0, 2)), qk, qt)
    assert not empty[0].any() and not empty[1].any() and not empty[2].any()
    assert np.allclose(smoothed_rates(empty[1], empty[2], [0.5, 0.2]), [0.5, 0.2])


def test_item_priors_are_time_safe_and_shared_by_every_split(frames):
    # Every 8th user's ratings (755 users, 133,361 ratings): the priors are per item and per row's past, so a subset
    # of users keeps every property checked here, at an eighth of the three passes' pandas time over all 1,000,209.
    some_users = frames["random"][frames["random"].user_id.astype(int) % 8 == 0].reset_index(drop=True)
    splits = movielens1m.add_priors(movielens1m.random_split(some_users))
    cfg = movielens1m.feature_config("random", priors=True)
    assert cfg.name == "movielens1m_priors" and set(cfg.raw_feature_columns) <= set(splits["test"].columns)
    assert cfg.domain_priors("scenario") == [[f"item_click_rate_{g}", f"item_like_rate_{g}"]
                                              for g in movielens1m.AGE_GROUPS]
    assert cfg.domain_priors("task") == [["item_click_rate"], ["item_like_rate"]]
    train = splits["train"]
    for name, split in splits.items():
        for _, row in split.sample(40, random_state=1).iterrows():
            earlier = train[(train.item_id == row.item_id) & (train.ts < row.ts)]
            assert row.item_log_count == pytest.approx(np.log1p(len(earlier)))
            like = (earlier.like.sum() + 20 * train.like.mean()) / (len(earlier) + 20)
            assert row.item_like_rate == pytest.approx(like)
            group = earlier[earlier.age_group == "35plus"]
            mean = train[train.age_group == "35plus"].click.mean()
            assert row.item_click_rate_35plus == pytest.approx((group.click.sum() + 20 * mean) / (len(group) + 20))
    # A label reaches only strictly later rows: flip one training row's labels, its own priors (and those of rows at
    # its timestamp) stay, but for the smoothing mean, which the flip moves by 1/(rows of the age group), ~2e-5 here;
    # the next later row of that item moves by 1/(earlier events + 20), > 0.02 for an item's few-th event.
    raw = {k: v[[c for c in v if not (c.startswith("item_") and c != "item_id")]] for k, v in splits.items()}
    r = train[(train.item_log_count > 1) & (train.item_log_count < 3)].index[0]  # an item's few-th event
    raw["train"] = raw["train"].copy()
    raw["train"].loc[r, ["click", "like"]] = 1 - raw["train"].loc[r, ["click", "like"]]
    again = movielens1m.add_priors(raw)
    same_item = train.item_id == train.item_id[r]
    at_or_before = same_item & (train.ts <= train.ts[r])
    group = f"item_click_rate_{train.age_group[r]}"
    for col in ("item_click_rate", "item_like_rate", group):
        assert np.allclose(again["train"].loc[at_or_before, col], train.loc[at_or_before, col], atol=1e-4)
    later = train[same_item & (train.ts > train.ts[r]) & (train.age_group == train.age_group[r])].index[0]
    for col in ("item_click_rate", group):
        assert abs(again["train"][col][later] - train[col][later]) > 1e-3
    # Eval and test labels never reach any prior: flipping all of them changes nothing.
    raw = {k: (v.assign(click=1 - v.click, like=1 - v.like) if k != "train" else v) for k, v in raw.items()}
    flipped = movielens1m.add_priors(raw)
    for name in ("eval", "test"):
        cols = [c for c in splits[name] if c.startswith("item_") and c != "item_id"]
        assert np.allclose(flipped[name][cols].to_numpy(), again[name][cols].to_numpy())
