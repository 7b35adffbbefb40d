"""Smoke run of `mdl-tf bench onboarding` (tiny data, one epoch): its files, the resumable log, and route (b)'s
exactly-zero change on the old scenarios."""
import json

import numpy as np
import pytest

from mdl_tf.cli import main
from mdl_tf.models import REGISTRY


@pytest.mark.slow
def test_bench_onboarding_smoke_writes_files_and_token_route_leaves_old_scenarios_unchanged(tmp_path):
    out, cache = tmp_path / "results", tmp_path / "cache"
    args = ["bench", "onboarding", "--dataset", "synthetic", "--synthetic-rows", "5000", "--base-rows", "1500",
            "--rows-list", "250", "--base-epochs", "1", "--epochs", "1", "--out", str(out), "--cache", str(cache)]
    assert main(args) == 0
    for name in ("runs.jsonl", "results.json", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["rows"]) for r in runs) == [("baseline", 250), ("fallback", 0), ("full", 250),
                                                               ("token", 250)]
    by = {r["method"]: r for r in runs}
    for r in runs:
        assert r["held_out"] == "search" and r["machine"]["cpus"] and "bench onboarding" in r["command"]
        assert set(r["new"]) == {"click", "purchase"} and 0.0 <= r["new"]["click"]["auc"] <= 1.0
    # (b) trains the new token only: the old scenarios' probabilities are bit-identical, their AUC change exactly 0.
    assert by["token"]["old_bit_identical"] and all(v == 0.0 for v in by["token"]["old_auc_change"].values())
    assert by["token"]["rows_used"] == 250 and by["token"]["trainable_params"] > 0
    # (c) trains every weight on old + new rows: the old scenarios' predictions move.
    assert not by["full"]["old_bit_identical"]
    assert by["full"]["trainable_params"] > 10 * by["token"]["trainable_params"]
    # (d) trains only the new scenario's rows of STAR's scenario-indexed weights.
    assert by["baseline"]["model"] == "star" and "scenario_embedding" in " ".join(by["baseline"]["scenario_weights"])
    summary = json.loads((out / "results.json").read_text())
    assert summary["runs_done"] == 4 and summary["methods"]["token"]["250"]["old_auc_change"] == {
        "click": 0.0, "purchase": 0.0}
    assert "bench onboarding" in (out / "results.md").read_text()
    # Resumable: a second run finds every key done and trains nothing.
    assert main(args) == 0
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4


def test_bench_onboarding_rejects_a_bad_rows_list(tmp_path, capsys):
    assert main(["bench", "onboarding", "--rows-list", "1000,x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rows-list" in err[0]
    assert not (tmp_path / "o").exists()


def test_bench_onboarding_rejects_a_baseline_without_scenario_weights(tmp_path, capsys):
    # RankMixer has no scenario-indexed weight: route (d) would grow and train nothing.
    assert main(["bench", "onboarding", "--baseline", "rankmixer", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--baseline rankmixer" in err[0] and "star" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - {"mdl"}))
def test_route_d_refuses_exactly_the_baselines_it_cannot_grow(synth_cfg, synth_batch, name):
    """A baseline's `route_d_refusal` (what `bench onboarding --baseline` checks) is None exactly when grow_scenarios
    can grow it: built with one more scenario, it has a weight whose scenario axis grew, and no other shape moved."""
    from mdl_tf.bench.onboarding import grow_scenarios
    from mdl_tf.config import with_scenario
    from mdl_tf.models import build_model

    old = build_model(name, synth_cfg, synth_batch[1], d_model=16).build_with_dummy_batch()
    new = build_model(name, with_scenario(synth_cfg, "new_tab"), synth_batch[1], d_model=16).build_with_dummy_batch()
    try:
        grown = grow_scenarios(old, new, synth_cfg.num_scenarios)
    except ValueError:
        grown = []
    assert bool(grown) == (REGISTRY[name].route_d_refusal is None), REGISTRY[name].route_d_refusal


def test_grow_scenarios_copies_old_rows_and_adds_their_mean():
    import tensorflow as tf

    from mdl_tf.bench.onboarding import grow_scenarios

    class Holder:
        def __init__(self, *shapes):
            self.vars = [tf.Variable(np.random.default_rng(i).normal(size=s).astype("float32"))
                         for i, s in enumerate(shapes)]

        def model_weights(self):
            return self.vars

    old, new = Holder((2, 3), (4,), (5, 2, 3)), Holder((3, 3), (4,), (5, 3, 3))
    grown = grow_scenarios(old, new, 2)
    assert [(v.ref(), axis) for v, axis in grown] == [(new.vars[0].ref(), 0), (new.vars[2].ref(), 1)]
    np.testing.assert_array_equal(new.vars[0].numpy()[:2], old.vars[0].numpy())
    np.testing.assert_allclose(new.vars[0].numpy()[2], old.vars[0].numpy().mean(axis=0))
    np.testing.assert_array_equal(new.vars[1].numpy(), old.vars[1].numpy())
    # Scenario-indexed along the second axis (HMoE's gate kernel [d, k, experts]).
    np.testing.assert_array_equal(new.vars[2].numpy()[:, :2], old.vars[2].numpy())
    np.testing.assert_allclose(new.vars[2].numpy()[:, 2], old.vars[2].numpy().mean(axis=1), rtol=1e-6)
    with pytest.raises(ValueError):
        grow_scenarios(Holder((2, 3)), Holder((2, 4)), 2)
    with pytest.raises(ValueError):  # two axes changed: not one scenario more
        grow_scenarios(Holder((2, 2)), Holder((3, 3)), 2)


def test_a_changed_model_default_retrains_the_cached_bases(monkeypatch):
    """The settings' fingerprint (base-model cache folder and run keys) covers MDL's and the baseline's defaults."""
    from mdl_tf.bench.onboarding import Settings
    from mdl_tf.models.mdl import MDLModel

    before = Settings().fingerprint()
    defaults = list(MDLModel.__init__.__defaults__)
    defaults[0] = 96  # d_model's default
    monkeypatch.setattr(MDLModel.__init__, "__defaults__", tuple(defaults))
    assert Settings().fingerprint() != before
    monkeypatch.undo()
    assert Settings().fingerprint() == before and Settings(baseline="pepnet").fingerprint() != before
