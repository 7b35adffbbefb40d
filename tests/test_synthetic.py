import numpy as np
import pandas as pd
import pytest

from mdl_tf.data import synthetic
from mdl_tf.data.io import read_split
from mdl_tf.evaluation import auc


@pytest.fixture(scope="module")
def data():
    return synthetic.generate(rows=20_000, seed=3)


def test_seeded_and_deterministic():
    a, b = synthetic.generate(2000, seed=5), synthetic.generate(2000, seed=5)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not synthetic.generate(2000, seed=6).frame.equals(a.frame)


def test_scenario_traffic_is_unequal_and_some_rows_have_two_scenarios(data):
    f = data.frame[data.frame.scenario != synthetic.UNSEEN_SCENARIO]
    share = f.scenario.value_counts(normalize=True)
    for name, target in zip(synthetic.SCENARIOS, synthetic.TRAFFIC):
        assert abs(share[name] - target) < 0.02, (name, share[name])
    multi = f.scenarios.str.contains("|", regex=False).mean()
    assert 0.05 < multi < 0.11
    # the membership column always includes the row's own scenario
    assert all(s in m.split("|") for s, m in zip(f.scenario, f.scenarios))


def test_purchase_is_a_cascade_of_click_with_a_lower_rate(data):
    f = data.frame
    assert (f.purchase <= f.click).all()
    assert 0.1 < f.click.mean() < 0.4
    assert 0.01 < f.purchase.mean() < f.click.mean() / 2


def test_label_rates_differ_by_scenario(data):
    rates = data.frame.groupby("scenario")[["click", "purchase"]].mean()
    assert rates.click.max() - rates.click.min() > 0.08
    assert rates.purchase.max() / rates.purchase.min() > 2


def test_a_scenario_blind_model_is_measurably_worse(data):
    f = data.frame
    known = (f.scenario != synthetic.UNSEEN_SCENARIO).to_numpy()
    aware = auc(f.click[known], data.click_logit[known])
    blind = auc(f.click[known], data.blind_click_logit[known])
    assert aware - blind > 0.04, (aware, blind)
    minority = (f.scenario == "feed").to_numpy()
    assert auc(f.click[minority], data.click_logit[minority]) - auc(f.click[minority],
                                                                     data.blind_click_logit[minority]) > 0.1


def test_splits_are_time_ordered_and_unseen_values_appear_in_test_only(data):
    f = data.frame
    ts = {s: f.ts[f.split == s] for s in synthetic.SPLITS}
    assert ts["train"].max() <= ts["eval"].min() and ts["eval"].max() <= ts["test"].min()
    train = f[f.split == "train"]
    test = f[f.split == "test"]
    assert (~test.user_id.isin(train.user_id)).sum() > 0
    assert (~test.item_id.isin(train.item_id)).sum() > 0
    assert (test.scenario == synthetic.UNSEEN_SCENARIO).sum() > 0
    assert (f[f.split != "test"].scenario == synthetic.UNSEEN_SCENARIO).sum() == 0
    tags = test.item_tags.str.split("|")
    assert tags.map(len).between(1, 4).all()


def test_history_holds_only_earlier_clicks(data):
    f = data.frame
    clicked = {}
    for u, it, hist, c in zip(f.user_id, f.item_id, f.hist_items, f.click):
        past = clicked.get(u, [])
        assert hist == "|".join(past[-synthetic.HISTORY:])
        if c:
            clicked.setdefault(u, []).append(it)


def test_written_dataset_reads_back_with_its_schema(synth_dir, synth_cfg):
    sizes = {s: len(read_split(synth_dir, s, synth_cfg)) for s in synthetic.SPLITS}
    assert sum(sizes.values()) == 6000 and sizes["train"] == 4800
    assert (synth_dir / "features.yaml").exists() and (synth_dir / "schema.pbtxt").exists()


def test_too_few_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 1000 rows"):
        synthetic.generate(rows=10)
