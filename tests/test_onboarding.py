"""Onboarding a new scenario / task into a trained MDL model (issue 18): `mdl-tf scenario add`, `mdl-tf task add`.

One small base model (d=16, one epoch) is trained on synthetic data with a scenario held out. The held-out scenario
"promo" has a known signal the base model never saw (click rises steeply with the item price, P = σ(3·z_price)), and
the new task "fav" has one too (P = σ(2.5·z_age), unrelated to click): the global-token fallback and the copied
task score them near chance, so an AUC well above both cannot come from the copied weights or luck.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mdl_tf.cli import main
from mdl_tf.data import synthetic
from mdl_tf.data.io import write_dataset
from mdl_tf.serving.examples import rows_to_examples

SPLITS = ("train", "eval")


def _splits(frame):
    return {s: frame[frame.split == s].drop(columns=["split"]) for s in SPLITS}


@pytest.fixture(scope="module")
def onboarding_data(tmp_path_factory):
    """Folders: base (no promo rows), full (promo rows too), fav (full + the fav label), and the base model."""
    from mdl_tf.training.onboarding import with_task
    from mdl_tf.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("onboarding")
    frame = synthetic.generate(rows=5000, seed=3).frame
    rng = np.random.default_rng(0)
    promo = rng.uniform(size=len(frame)) < 0.25
    price_z = (np.log(frame.item_price) - 3.0) / 0.8
    click = (rng.uniform(size=len(frame)) < 1 / (1 + np.exp(-3.0 * price_z))).astype(int)
    frame.loc[promo, "scenario"] = "promo"
    frame.loc[promo, "scenarios"] = "promo"
    frame.loc[promo, "click"] = click[promo]
    frame.loc[promo, "purchase"] = (click * (rng.uniform(size=len(frame)) < 0.3)).astype(int)[promo]
    age_z = (frame.user_age - 44.0) / 15.0
    frame["fav"] = (rng.uniform(size=len(frame)) < 1 / (1 + np.exp(-2.5 * age_z))).astype(int)
    cfg = synthetic.feature_config()
    write_dataset(root / "base", _splits(frame[~promo].drop(columns=["fav"])), cfg, {})
    write_dataset(root / "full", _splits(frame.drop(columns=["fav"])), cfg, {})
    write_dataset(root / "fav", _splits(frame), with_task(cfg, "fav", "fav"), {})
    few = frame.drop(columns=["fav"]).copy()
    few.loc[promo & (np.cumsum(promo) > 50), ["scenario", "scenarios"]] = "home"  # 50 promo rows in all
    write_dataset(root / "few", _splits(few), cfg, {})
    train(root / "base", root / "base", root / "m0", TrainConfig(epochs=1, batch_size=256, verbose=0),
          {"d_model": 16})
    return root, frame, promo


def _serve(path, frame, cfg):
    loaded = tf.saved_model.load(str(path / "saved_model"))
    out = loaded.signatures["serving_default"](examples=tf.constant(rows_to_examples(frame, cfg)))
    return {k: v.numpy() for k, v in out.items()}


def _auc(labels, scores):
    from mdl_tf.evaluation import auc

    return auc(np.asarray(labels), np.asarray(scores))


@pytest.fixture(scope="module")
def scenario_added(onboarding_data):
    root, _, _ = onboarding_data
    code = main(["scenario", "add", "--model-dir", str(root / "m0"), "--name", "promo", "--data", str(root / "full"),
                 "--out", str(root / "m1"), "--batch-size", "32", "--epochs", "2", "--dense-lr", "3e-3"])
    assert code == 0
    return root / "m1"


def test_scenario_add_keeps_old_scenarios_bit_identical_and_learns_the_new_one(onboarding_data, scenario_added):
    root, frame, promo = onboarding_data
    meta = json.loads((scenario_added / "saved_model" / "assets.extra" / "mdl_metadata.json").read_text())
    assert meta["scenarios"] == ["home", "feed", "search", "promo"]
    assert meta["onboarding"]["steps"] == [{"kind": "scenario", "name": "promo", "init_from": "global"}]
    assert sorted(os.listdir(scenario_added)) == ["metrics.json", "saved_model", "train_config.json", "transform.json"]
    cfg = synthetic.feature_config()
    # Old scenarios (and the unseen 'live' fallback), training and eval rows: exactly the old model's outputs.
    old_rows = frame[~promo].iloc[::7].iloc[:400]
    before, after = _serve(root / "m0", old_rows, cfg), _serve(scenario_added, old_rows, cfg)
    assert len(old_rows) == 400 and set(before) == set(after) == {"click_probability", "purchase_probability"}
    for key in before:
        assert np.array_equal(before[key], after[key]), key
    # The new scenario has its own token: its rows change, and its click AUC is far above the fallback's and chance.
    new_rows = frame[promo & (frame.split == "eval")]
    fallback, onboarded = _serve(root / "m0", new_rows, cfg), _serve(scenario_added, new_rows, cfg)
    assert not np.array_equal(fallback["click_probability"], onboarded["click_probability"])
    auc_before = _auc(new_rows.click, fallback["click_probability"])
    auc_after = _auc(new_rows.click, onboarded["click_probability"])
    assert auc_after > 0.6 and auc_after > auc_before + 0.1, (auc_before, auc_after)
    report = json.loads((scenario_added / "metrics.json").read_text())["onboarding"][0]
    assert report["bit_identical_rows"] > 300 and report["onboarded"]["click"]["auc"] == pytest.approx(auc_after)


def test_task_add_on_an_onboarded_model_keeps_every_old_output(onboarding_data, scenario_added):
    root, frame, promo = onboarding_data
    code = main(["task", "add", "--model-dir", str(scenario_added), "--name", "fav", "--label", "fav",
                 "--data", str(root / "fav"), "--out", str(root / "m2"), "--batch-size", "128"])
    assert code == 0
    from mdl_tf.training.onboarding import with_scenario

    cfg = with_scenario(synthetic.feature_config(), "promo")
    rows = frame[frame.split == "eval"]  # every scenario, promo included
    before, after = _serve(scenario_added, rows, cfg), _serve(root / "m2", rows, cfg)
    assert set(after) == {"click_probability", "purchase_probability", "fav_probability"}
    for key in before:
        assert np.array_equal(before[key], after[key]), key
    report = json.loads((root / "m2" / "metrics.json").read_text())["onboarding"]
    assert [r["kind"] for r in report] == ["scenario", "task"]
    fav_auc = _auc(rows.fav, after["fav_probability"])
    assert fav_auc > 0.7 and fav_auc > report[1]["initial"]["fav"]["auc"] + 0.1, report[1]


def test_an_onboarding_that_changes_an_old_output_fails_and_writes_nothing(onboarding_data, tmp_path, monkeypatch):
    """The bit-identity check is live: an onboarded model whose logits move by 0.01% on every row (old scenarios
    included) is refused with an output named, and neither the --out folder nor its staging folder is left."""
    from mdl_tf.models.onboarded import OnboardedMDL

    root, _, _ = onboarding_data
    real = OnboardedMDL.compute_logits
    monkeypatch.setattr(OnboardedMDL, "compute_logits",
                        lambda self, features, training=False: real(self, features, training) * 1.0001)
    with pytest.raises(RuntimeError, match="onboarding changed existing output '(click|purchase)'"):
        main(["scenario", "add", "--model-dir", str(root / "m0"), "--name", "promo", "--data", str(root / "full"),
              "--out", str(tmp_path / "m"), "--epochs", "1", "--batch-size", "256"])
    assert list(tmp_path.iterdir()) == []


def test_a_new_scenario_token_starts_as_the_global_token(onboarding_data):
    """Initialised from the global token's slices, the new token reproduces the fallback on its own rows."""
    from mdl_tf.data.transform import FeatureTransform, raw_columns
    from mdl_tf.training.onboarding import load_trained, make_onboarded, with_scenario

    root, frame, promo = onboarding_data
    trained = load_trained(root / "m0")
    cfg = with_scenario(trained.cfg, "promo")
    model = make_onboarded(cfg, trained.model, [{"kind": "scenario", "name": "promo", "init_from": "global"}])
    rows = frame[promo].iloc[:64]
    raw = {k: tf.constant(v) for k, v in raw_columns(rows, cfg).items()}
    features = FeatureTransform(cfg, trained.stats)(raw)
    old = trained.model.compute_logits({**features, "scenario_mask": features["scenario_mask"][:, :3]}).numpy()
    new = model.compute_logits(features).numpy()
    assert features["scenario_mask"].numpy()[:, 3].min() == 1
    np.testing.assert_allclose(new, old, atol=1e-5)
    assert model.trainable_weights and not model.base.trainable_weights


@pytest.mark.parametrize("case", ["no_model", "not_a_model", "scenario_exists", "too_few_rows", "task_exists",
                                  "label_missing", "label_not_binary"])
def test_bad_onboarding_requests_fail_in_one_line_and_write_nothing(onboarding_data, tmp_path, capsys, case):
    root, frame, _ = onboarding_data
    out = tmp_path / "out"
    model = str(root / "m0")
    scen = ["scenario", "add", "--data", str(root / "full"), "--out", str(out)]
    task = ["task", "add", "--data", str(root / "fav"), "--out", str(out)]
    if case == "label_not_binary":
        bad = frame.copy()
        bad["fav"] = bad["fav"].where(bad.index != bad.index[3], 2)
        write_dataset(tmp_path / "bad", _splits(bad), synthetic.feature_config(), {})
    argv, expected = {
        "no_model": (scen + ["--model-dir", str(tmp_path / "nope"), "--name", "promo"], "no such folder"),
        "not_a_model": (scen + ["--model-dir", str(root / "full"), "--name", "promo"], "missing"),
        "scenario_exists": (scen + ["--model-dir", model, "--name", "feed"], "already has a scenario named 'feed'"),
        "too_few_rows": (["scenario", "add", "--data", str(root / "few"), "--out", str(out), "--model-dir", model,
                          "--name", "promo"], "at least 200"),
        "task_exists": (task + ["--model-dir", model, "--name", "click", "--label", "fav"], "already has a task"),
        "label_missing": (task + ["--model-dir", model, "--name", "share", "--label", "share"], "no column 'share'"),
        "label_not_binary": (["task", "add", "--data", str(tmp_path / "bad"), "--out", str(out), "--model-dir", model,
                              "--name", "fav", "--label", "fav"], "is not 0 or 1"),
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mdl-tf: error:") and expected in err[0], err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
