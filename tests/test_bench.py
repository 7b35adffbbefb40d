"""Smoke runs of the benchmark commands: output files and their schema (never timings)."""
import json
import os

import pytest

from mdl_tf.cli import main
from mdl_tf.errors import UserError


@pytest.mark.slow
def test_bench_quality_smoke_writes_json_markdown_and_plot_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    argv = ["bench", "quality", "--dataset", "synthetic", "--rows", "3000", "--models", "mdl,mmoe",
            "--seeds", "2", "--epochs", "1", "--batch-size", "256", "--dense-params", "62000",
            "--ablations", "no_task_tokens", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "synthetic" / "quality.json").read_text())
    assert result["split_reported"] == "test" and result["seeds"] == 2
    rows = result["rows"]
    assert set(rows) == {"mdl", "mmoe", "mdl:no_task_tokens"}
    for name, row in rows.items():
        if ":" not in name:  # the models meet the budget; the ablations keep MDL's width instead
            assert abs(row["params"]["dense"] - 62000) <= 0.05 * 62000
        assert row["mean_auc"]["n"] == 2 and {"home/click", "feed/purchase"} <= set(row["cells"])
    # Removing the task tokens removes weights; the width is not grown back to the budget.
    assert {k: rows["mdl:no_task_tokens"]["hparams"][k] for k in ("d_model", "ffn_multiplier")} == \
        {k: rows["mdl"]["hparams"][k] for k in ("d_model", "ffn_multiplier")}
    assert rows["mdl:no_task_tokens"]["params"]["dense"] < rows["mdl"]["params"]["dense"]
    assert set(result["mdl_gain_over_best_baseline"]["home/click"]) == {"best_baseline", "best_baseline_auc",
                                                                     "relative_gain"}
    table = (out / "synthetic" / "quality.md").read_text()
    assert "MDL vs best baseline" in table and "GAUC click" in table and result["command"] in table
    assert "partial" not in table and result["complete"] and result["runs_done"] == 6
    assert (out / "synthetic" / "quality.png").stat().st_size > 1000

    # Resumable: a re-run trains only what runs.jsonl lacks. Drop one recorded run (as if the session had been
    # killed before it finished) and the same command trains exactly that (row, seed) and nothing else.
    import mdl_tf.bench.quality as quality

    log = out / "synthetic" / "runs.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 6
    dropped = json.loads(lines[3])
    log.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    trained = []
    real_train = quality.train
    monkeypatch.setattr(quality, "train", lambda *a, **k: trained.append(a[3].model) or real_train(*a, **k))
    assert main(argv) == 0
    assert len(trained) == 1 and len(log.read_text().splitlines()) == 6
    assert [json.loads(x)["key"] for x in log.read_text().splitlines()][-1] == dropped["key"]
    again = json.loads((out / "synthetic" / "quality.json").read_text())
    assert again["complete"] and set(again["rows"]) == set(rows)
    assert len(again["machines_of_runs"]) == 1 and again["machines_of_runs"][0]["cpus"] >= 1
    assert "already in" in capsys.readouterr().out
    # The key moves with what decides a result (a setting, a row's hyperparameters, the seed), so a run recorded
    # under other settings is never reused; and it is the same in a fresh computation (no paths, no machine facts).
    key = quality.run_key("mmoe", "mmoe", {}, 0, {"epochs": 1})
    assert key == quality.run_key("mmoe", "mmoe", {}, 0, {"epochs": 1})
    assert len({key, quality.run_key("mmoe", "mmoe", {}, 0, {"epochs": 2}),
                quality.run_key("mmoe", "mmoe", {"d_model": 16}, 0, {"epochs": 1}),
                quality.run_key("mmoe", "mmoe", {}, 1, {"epochs": 1})}) == 4


def test_bench_quality_names_an_unknown_ablation_of_its_list_before_any_work(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["bench", "quality", "--dataset", "synthetic", "--models", "mdl,mmoe", "--ablations",
                 "no_task_tokens, no_scenario_attention,no_such_part", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mdl-tf: error: --ablations: unknown ablation(s) ['no_such_part']; "
                                               "available: no_global_token, ")
    assert not out.exists()


@pytest.mark.slow
def test_bench_speed_smoke_writes_report_comparison_and_scaling(tmp_path, monkeypatch):
    from mdl_tf.bench import speed
    from mdl_tf.bench.speed import run_speed_bench

    # The reference matmul rate is measured for real, on [256, 256] matrices instead of the command's 30 products of
    # [2048, 2048] (about 500 GFLOP, tens of seconds on 2 busy cores): the smoke test checks fields, never timings.
    real_matmul = speed.matmul_gflops
    monkeypatch.setattr(speed, "matmul_gflops", lambda: real_matmul(n=256, repeats=2, trials=1))
    # The sweep's other knobs at a small MDL (the command's base is d_model 192, 2 blocks): six graphs to trace.
    monkeypatch.setattr(speed, "SWEEP_BASE", {**speed.SWEEP_BASE, "d_model": 32, "num_layers": 1})
    r = run_speed_bench(tmp_path, batch_size=64, steps=2, d_model=32, num_layers=1, scaling_batch_size=32,
                        sweeps={"d_model": (32, 64), "feature_tokens": (2, 4), "tasks": (2, 3)})
    saved = json.loads((tmp_path / "speed_float32.json").read_text())
    assert saved["command"].startswith("mdl-tf bench speed") and saved["machine"]["cpus"] >= 1
    assert r["train"]["examples_per_second"] > 0 and r["matmul_fp32_gflops"] > 0
    assert 0 < r["fraction_of_matmul_rate"] and r["model"]["forward_mflops_per_example"] > 0
    assert r["inference"]["batch1_latency_ms_p99"] >= r["inference"]["batch1_latency_ms_p50"] > 0
    assert r["peak_rss_mib"] > 0
    cmp = saved["mdl_vs_mmoe"]
    assert abs(cmp["dense_params"]["mmoe"] - cmp["dense_params"]["mdl"]) <= 0.05 * cmp["dense_params"]["mdl"]
    assert cmp["mdl_over_mmoe_time_ratio"] > 0
    rows = saved["scaling"]["rows"]
    assert [(x["knob"], x["value"]) for x in rows] == [("d_model", 32), ("d_model", 64), ("feature_tokens", 2),
                                                        ("feature_tokens", 4), ("tasks", 2), ("tasks", 3)]
    assert [x["feature_tokens"] for x in rows if x["knob"] == "feature_tokens"] == [2, 4]
    assert [x["tasks"] for x in rows if x["knob"] == "tasks"] == [2, 3]
    # The analytic cost grows with every knob.
    for knob in ("d_model", "feature_tokens", "tasks"):
        flops = [x["forward_mflops_per_example"] for x in rows if x["knob"] == knob]
        assert flops[1] > flops[0], knob
    assert "| d_model | 64 |" in (tmp_path / "scaling.md").read_text()
    assert (tmp_path / "scaling.png").stat().st_size > 1000


@pytest.mark.slow
def test_bench_pipeline_smoke_times_every_component_and_merges_runs(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    # A vocabulary run of the same settings recorded earlier: the hashed run joins it instead of replacing it.
    earlier = {"rows": 1500, "ids": "vocabulary", "measured": "2026-11-30", "pipeline_seconds": 99.0,
               "components": {"Transform": 40.0}}
    from mdl_tf.bench.machine import machine_info

    (out / "pipeline.json").write_text(json.dumps({"train_steps": 10, "workers": 1, "d_model": 32,
                                                   "machine": machine_info(), "runs": [earlier]}))
    assert main(["bench", "pipeline", "--rows", "1500", "--ids", "hashed", "--train-steps", "10",
                 "--out", str(out)]) == 0
    result = json.loads((out / "pipeline.json").read_text())
    assert result["command"].startswith("mdl-tf bench pipeline --rows 1500 --ids hashed")
    assert result["train_steps"] == 10
    kept, run = result["runs"]
    assert kept == {"command": None, **earlier}
    assert run["rows"] == 1500 and run["ids"] == "hashed" and run["pipeline_seconds"] > 0
    for component in ("CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "Transform",
                      "Trainer", "Evaluator"):
        assert run["components"].get(component, -1) >= 0, (component, run["components"])
    assert sum(run["components"].values()) <= run["pipeline_seconds"] + 1
    table = (out / "pipeline.md").read_text()
    assert "| Transform | 40.0 | " in table
    assert "1,500 rows, vocabulary ids (2026-11-30) | 1,500 rows, hashed ids (" in table
    assert (out / "pipeline.png").stat().st_size > 1000


def test_bench_pipeline_id_modes_hash_every_id_feature_or_none():
    from mdl_tf.bench.pipeline import ID_FEATURES, id_config

    hashed, vocab = id_config("hashed", 1_000_000), id_config("vocabulary", 1_000_000)
    # 40,000 users and 20,000 items at 1M rows: the power of two at least twice each count.
    assert {f.name: f.hash_buckets for f in hashed.features if f.name in ID_FEATURES} == {
        "user_id": 131072, "item_id": 65536, "hist_items": 65536}
    assert all(f.hash_buckets is None for f in vocab.features)
    assert [f.name for f in hashed.features] == [f.name for f in vocab.features]
    with pytest.raises(ValueError, match="ids must be one of"):
        id_config("bloom", 10)


def test_bench_pipeline_merges_comparable_runs_and_keeps_the_newest(tmp_path):
    from mdl_tf.bench import pipeline as bp

    machine = {"cpus": 2}
    legacy = {"command": "mdl-tf bench pipeline --rows 10,20", "train_steps": 200, "machine": machine,
              "runs": [{"rows": 10, "pipeline_seconds": 1.0, "components": {}},   # before --ids: vocabulary
                       {"rows": 20, "pipeline_seconds": 2.0, "components": {}}]}
    new = {"command": "new", "train_steps": 200, "workers": 1, "d_model": 32, "machine": machine,
           "runs": [{"rows": 20, "ids": "vocabulary", "pipeline_seconds": 3.0, "components": {}},
                    {"rows": 10, "ids": "hashed", "pipeline_seconds": 4.0, "components": {}}]}
    assert bp.comparable(legacy, new)
    merged = bp._merge(legacy, new)
    assert [(r["rows"], r.get("ids", "vocabulary"), r["pipeline_seconds"]) for r in merged["runs"]] == [
        (10, "vocabulary", 1.0), (20, "vocabulary", 3.0), (10, "hashed", 4.0)]  # the redone (20, vocabulary): newest
    assert merged["runs"][0]["command"] == legacy["command"]
    table = bp.markdown(merged)
    assert "from `mdl-tf bench pipeline --rows 10,20` and `new`" in table
    assert "| **whole pipeline** | 1.0 | 3.0 | 4.0 |" in table
    for other in ({"train_steps": 100}, {"workers": 2}, {"d_model": 64}, {"machine": {"cpus": 8}}):
        assert not bp.comparable({**legacy, **other}, new), other
    # An id mode this version does not know sorts last instead of failing after an hour of timing.
    odd = {**new, "runs": [*new["runs"], {"rows": 5, "ids": "bloom", "pipeline_seconds": 5.0, "components": {}}]}
    assert bp._merge({}, odd)["runs"][-1]["ids"] == "bloom"


def test_bench_pipeline_rejects_an_unknown_id_mode(tmp_path, capsys):
    assert main(["bench", "pipeline", "--rows", "1500", "--ids", "hashed,bloom", "--out", str(tmp_path)]) == 2
    assert "mdl-tf: error: --ids: unknown id encoding(s) ['bloom']; available: vocabulary, hashed" in \
        capsys.readouterr().err
    assert not (tmp_path / "pipeline.json").exists()  # only the command log is written


def _fake_record(model, protocol, trial, seed, eval_auc, test_auc):
    from mdl_tf.bench import movielens1m as b

    pairs = [(s, t) for s in ("under25", "25to34", "35plus") for t in ("click", "like")]
    cells = {f"{s}/{t}": {"auc": test_auc + 0.001 * i, "logloss": 0.5, "count": 100}
             for i, (s, t) in enumerate(pairs)}
    interval = {"auc": [test_auc - 0.01, test_auc + 0.01], "users": 80}
    return {"key": b.run_key(model, protocol, trial, seed), "protocol": protocol, "model": model, "trial": trial,
            "seed": seed, "hparams": {"d_model": 64}, "params": {"dense": 1000, "embedding": 10},
            "dense_budget": 1000, "best_epoch": 2, "epochs_run": 4, "train_seconds": 1.0, "wall_seconds": 2.0,
            "eval": {"mean_auc": eval_auc, "cells": cells, "overall": {}, "gauc": {}},
            "test": {"mean_auc": test_auc, "cells": cells,
                     "overall": {t: {"auc": test_auc, "logloss": 0.5} for t in ("click", "like")},
                     "gauc": {"click": test_auc - 0.05, "like": test_auc - 0.04}},
            "test_intervals": {t: {"pooled": interval, "gauc": [0.7, 0.72], "under25": interval,
                                   "25to34": interval, "35plus": interval} for t in ("click", "like")},
            "machine": {"cpus": 2}, "settings": b.SETTINGS, "attention_entropy": None}


def test_movielens1m_tables_report_mdls_attention_entropy_per_layer_over_seeds():
    """Issue 16: the domain tokens' attention must be shown non-uniform after training, per layer, in the results."""
    from mdl_tf.bench import movielens1m as b
    from mdl_tf.bench.movielens1m_report import markdown, summarise

    runs = {}
    for m in ("mdl", "mmoe"):
        for i, trial in enumerate(b.tuning_grid(m)):
            for seed in ((0, 1, 2) if i == 0 else (0,)):
                rec = _fake_record(m, "random", trial, seed, 0.81 if i == 0 else 0.80, 0.80)
                if m == "mdl":
                    rec["attention_entropy"] = [
                        {"layer": 1, "scenario": 0.9 + 0.1 * seed, "task": 1.0, "uniform": 1.3862943611198906},
                        {"layer": 2, "scenario": 1.2, "task": 1.1 + 0.1 * seed, "uniform": 1.3862943611198906}]
                runs[rec["key"]] = rec
    table = summarise(runs)["random"]["rows"]
    assert table["mmoe"]["attention_entropy"] is None
    layer1, layer2 = table["mdl"]["attention_entropy"]
    assert layer1["layer"] == 1 and layer1["scenario"]["mean"] == pytest.approx(1.0) and layer1["scenario"]["n"] == 3
    assert layer2["task"]["mean"] == pytest.approx(1.2) and layer2["uniform"] == pytest.approx(1.386, abs=1e-3)
    md = markdown(summarise(runs))
    assert "ln N_f = 1.386): layer 1 scenario 1.000 ± 0.082, task 1.000 ± 0.000; layer 2 scenario 1.200 ± 0.000, " \
           "task 1.200 ± 0.082." in md
    assert "mmoe: the domain tokens" not in md


def test_movielens1m_plan_resumes_and_moves_through_the_stages(tmp_path):
    """The plan: every model's trials (seed 0), then the eval-chosen trial's other seeds; on temporal a model's
    seed 0 (MDL's 3 seeds) once its point is chosen, the two best baselines' other seeds once the random table is
    complete. A recorded run is never planned again, a torn last line is ignored."""
    from mdl_tf.bench import movielens1m as b
    from mdl_tf.bench.movielens1m_report import markdown, summarise

    log = tmp_path / "runs.jsonl"
    todo = b.plan(b.read_runs(log))
    assert len(todo) == 9 * 4 and todo[0] == ("random", "shared_bottom", b.tuning_grid("shared_bottom")[0], 0)
    # shared_bottom's trials: the third is best on eval (and worst on test: test never decides)
    for i, trial in enumerate(b.tuning_grid("shared_bottom")):
        b.append_run(log, _fake_record("shared_bottom", "random", trial, 0, 0.80 + (0.01 if i == 2 else 0),
                                       0.78 if i == 2 else 0.81))
    with open(log, "a") as fh:
        fh.write('{"key": "torn')  # a run killed while writing its line
    runs = b.read_runs(log)
    assert len(runs) == 4 and b.chosen_trial(runs, "shared_bottom") == b.tuning_grid("shared_bottom")[2]
    todo = b.plan(runs, ("random",))
    assert todo[:2] == [("random", "shared_bottom", b.tuning_grid("shared_bottom")[2], s) for s in (1, 2)]
    # Its point is chosen, so its temporal seed 0 can run; no other model has a point yet.
    assert [t for t in b.plan(runs) if t[0] == "temporal"] == [
        ("temporal", "shared_bottom", b.tuning_grid("shared_bottom")[2], 0)]
    assert b.best_baselines(runs, 2) is None  # the random table is not complete yet
    # Every model done on random: temporal gets 3 seeds for MDL and the two best baselines, 1 for the rest.
    log.write_text("")
    for m in b.MODELS:
        for i, trial in enumerate(b.tuning_grid(m)):
            b.append_run(log, _fake_record(m, "random", trial, 0, 0.80 + 0.001 * i, 0.80))
        best = b.tuning_grid(m)[-1]
        score = {"mmoe": 0.83, "ple": 0.82, "mdl": 0.835}.get(m, 0.80)
        for s in (1, 2):
            b.append_run(log, _fake_record(m, "random", best, s, 0.80, score))
    runs = b.read_runs(log)
    assert b.best_baselines(runs, 2) == ["mmoe", "ple"]
    todo = b.plan(runs)
    assert all(t[0] == "temporal" for t in todo)
    assert sorted((m, len([t for t in todo if t[1] == m])) for m in ("mdl", "mmoe", "ple", "star")) == \
        [("mdl", 3), ("mmoe", 3), ("ple", 3), ("star", 1)]
    summary = summarise(runs)
    gains = summary["random"]["mdl_vs_best_baseline"]
    assert gains["mean"]["best_baseline"] == "mmoe"
    assert set(summary["anchors"]) == {"shared_bottom", "mmoe", "ple", "star", "pepnet"}
    md = markdown(summary)
    assert "Published anchors" in md and "MDL vs best baseline" in md and "(< 50: noisy)" not in md


def test_movielens1m_priors_variant_gets_its_own_table_from_the_probes_at_the_chosen_points(tmp_path):
    """Probes with priors=true at each model's chosen point form the temporal+priors table (MDL against the best
    baseline of that table, paired over seeds); a probe at another point, or without priors, stays out of it, and
    the tuned temporal table never reads probes."""
    from mdl_tf.bench import movielens1m as b
    from mdl_tf.bench.movielens1m_report import markdown, summarise

    runs, probes = {}, {}
    for m in ("mdl", "rankmixer"):
        for i, trial in enumerate(b.tuning_grid(m)):
            rec = _fake_record(m, "random", trial, 0, 0.80 + (0.01 if i == 1 else 0), 0.80)
            runs[rec["key"]] = rec
    for m, test in (("mdl", 0.78), ("rankmixer", 0.77)):
        chosen = b.tuning_grid(m)[1]
        for s in (0, 1, 2):
            rec = _fake_record(m, "temporal", {**chosen, "priors": True}, s, 0.75, test + 0.001 * s)
            probes[rec["key"]] = rec
    other = _fake_record("rankmixer", "temporal", {**b.tuning_grid("rankmixer")[0], "priors": True}, 0, 0.9, 0.9)
    probes[other["key"]] = other  # not the chosen point: ignored
    plain = _fake_record("mdl", "temporal", b.tuning_grid("mdl")[1], 0, 0.9, 0.9)
    probes[plain["key"]] = plain  # the chosen point without priors, as a probe: in neither table
    summary = summarise(runs, probes)
    assert summary["temporal"]["rows"] == {}  # probes never enter the tuned tables
    assert summary["variants"][0]["table"]["rows"]["mdl"]["seeds"] == [0, 1, 2]
    (variant,) = summary["variants"]
    assert variant["variant"] == {"priors": True} and set(variant["table"]["rows"]) == {"mdl", "rankmixer"}
    row = variant["table"]["rows"]["rankmixer"]
    assert row["seeds"] == [0, 1, 2] and abs(row["mean_auc"]["mean"] - 0.771) < 1e-9
    gain = variant["table"]["mdl_vs_best_baseline"]["under25/click"]
    assert gain["best_baseline"] == "rankmixer" and abs(gain["relative_gain"] - 0.01 / 0.771) < 1e-9
    assert gain["significant"] is True  # the same +0.01 on every seed
    assert "every model with the item priors" in markdown(summary)
    assert summarise(runs)["variants"] == []


def test_fingerprint_changes_with_model_defaults_only_for_that_model(monkeypatch):
    from mdl_tf.bench import movielens1m as b
    from mdl_tf.models.mdl import MDLModel

    trial = b.tuning_grid("mdl")[0]
    before = {m: b.fingerprint(m, "random", trial) for m in ("mdl", "mmoe")}
    defaults = list(MDLModel.__init__.__defaults__)
    defaults[0] = 96  # d_model's default
    monkeypatch.setattr(MDLModel.__init__, "__defaults__", tuple(defaults))
    assert b.fingerprint("mdl", "random", trial) != before["mdl"]
    assert b.fingerprint("mmoe", "random", trial) == before["mmoe"]
    # A flag added at its behaviour-preserving default (dropout=0.0) is left out of the fingerprint; counted,
    # or at another default, it changes it.
    monkeypatch.undo()
    assert b.fingerprint("mdl", "random", trial) == before["mdl"]
    monkeypatch.delitem(b.NEUTRAL_DEFAULTS, "dropout")
    assert b.fingerprint("mdl", "random", trial) != before["mdl"]
    monkeypatch.undo()
    monkeypatch.setitem(b.NEUTRAL_DEFAULTS, "dropout", 0.1)
    assert b.fingerprint("mdl", "random", trial) != before["mdl"]
    # A default moved off its neutral value (imp_tables: "own" -> "shared") is counted, so MDL's runs re-tune.
    monkeypatch.undo()
    monkeypatch.setitem(b.NEUTRAL_DEFAULTS, "imp_tables", "shared")
    assert b.fingerprint("mdl", "random", trial) != before["mdl"]
    # A model's `revision` counts from 2 (revision 1's keys are the ones recorded before revisions existed).
    monkeypatch.undo()
    assert MDLModel.revision == 1 and "revision" not in b.model_defaults("mdl")
    assert b.model_defaults("dffm")["revision"] == 2  # DFFM's dynamic weights made to learn (a93c0c0)
    monkeypatch.setattr(MDLModel, "revision", 2)
    assert b.fingerprint("mdl", "random", trial) != before["mdl"]
    assert b.fingerprint("mmoe", "random", trial) == before["mmoe"]


def test_quality_run_key_leaves_out_training_flags_at_their_neutral_default(monkeypatch):
    """`bench quality` keys hash TrainConfig's compile arguments less those at their NEUTRAL_DEFAULTS value, so a
    training flag added after runs were recorded (warmup_steps) keeps every recorded key; counting it, or moving
    its default, changes the key."""
    import dataclasses

    from mdl_tf.bench import movielens1m as b
    from mdl_tf.bench import quality
    from mdl_tf.training.trainer import TrainConfig

    def key():
        return quality.run_key("mmoe", "mmoe", {}, 0, {"epochs": 1})

    before = key()
    monkeypatch.delitem(b.NEUTRAL_DEFAULTS, "warmup_steps")
    assert key() != before
    monkeypatch.undo()
    assert key() == before
    monkeypatch.setattr(quality, "TrainConfig", lambda **kw: dataclasses.replace(TrainConfig(**kw), warmup_steps=100))
    assert key() != before


def test_recorded_movielens100k_keys_match_todays_code():
    """The committed MovieLens-100K table (benchmarks/results/movielens) is today's: re-deriving the key of every
    model's runs from the recorded command gives keys runs.jsonl holds, so `bench quality` with that command trains
    nothing again. A change to a model's defaults or to a result-changing training default fails here: re-run
    the table (`mdl-tf bench quality --dataset movielens ...`, the command in quality.json) in the same change."""
    import re
    import shlex

    from mdl_tf.bench import quality
    from tests.conftest import REPO

    results = os.path.join(REPO, "benchmarks", "results", "movielens")
    with open(os.path.join(results, "quality.json")) as f:
        argv = shlex.split(json.load(f)["command"])
    arg = {argv[i][2:]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    with open(os.path.join(results, "runs.jsonl")) as f:
        recorded = {json.loads(line)["key"] for line in f if line.strip()}
    budget = int(arg["dense-params"])
    settings = {"dataset": "movielens", "rows": None, "dense_params": budget, "epochs": int(arg["epochs"]),
                "batch_size": int(arg["batch-size"]), "patience": int(arg["patience"]), "budget": budget}
    models = arg["models"].split(",")
    assert len(models) == 9
    keys = {quality.run_key(m, m, {}, seed, settings) for m in models for seed in range(int(arg["seeds"]))}
    assert keys <= recorded, sorted(keys - recorded)
    assert all(re.fullmatch(r"[a-z_]+/s[012]/[0-9a-f]{10}", k) for k in keys)


def test_user_bootstrap_interval_contains_the_estimate():
    import numpy as np

    from mdl_tf.bench.movielens1m import user_bootstrap
    from mdl_tf.evaluation import auc

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60), 20)
    labels = (rng.random(1200) < 0.4).astype(float)
    probs = np.clip(0.3 * labels + rng.random(1200) * 0.7, 0, 1)
    out = user_bootstrap(users, labels, probs, {"all": np.ones(1200, bool), "few": users < 10}, resamples=50)
    lo, hi = out["all"]["auc"]
    assert lo < auc(labels, probs) < hi and out["all"]["users"] == 60 and out["few"]["users"] == 10
    assert out["few"]["auc"][1] - out["few"]["auc"][0] > hi - lo  # fewer users, wider interval
    assert out["gauc"][0] < out["gauc"][1]


def test_movielens1m_probe_runs_once_beside_the_tuning_point_and_never_enters_the_tables(tmp_path, monkeypatch,
                                                                                        capsys):
    """A probe trains the model at its first grid point (tuning incomplete) with the override, records it in
    probes.jsonl once (a re-run reuses it) and leaves runs.jsonl alone; an unknown flag is one CLI line."""
    from mdl_tf.bench import movielens1m as b
    from mdl_tf.cli import main

    trained = []

    def fake_train_one(data, model, trial, seed, work):
        trained.append((model, trial, seed))
        return _fake_record(model, data.protocol, trial, seed, 0.81, 0.80)

    class FakeData:
        def __init__(self, protocol, cache, priors=False):
            self.protocol, self.priors = protocol, priors

    monkeypatch.setattr(b, "train_one", fake_train_one)
    monkeypatch.setattr(b, "Data", FakeData)
    base = b.tuning_grid("mdl")[0]
    b.append_run(tmp_path / "runs.jsonl", _fake_record("mdl", "random", base, 0, 0.80, 0.80))
    for _ in range(2):
        records = b.probe(tmp_path, tmp_path, "mdl", {"imp_tables": "shared"}, seeds=(0, 1))
    assert trained == [("mdl", {**base, "imp_tables": "shared"}, s) for s in (0, 1)]  # the second call reused them
    assert [r["seed"] for r in records] == [0, 1] and len(b.read_runs(tmp_path / "probes.jsonl")) == 2
    assert len(b.read_runs(tmp_path / "runs.jsonl")) == 1
    assert "eval 0.8100 (tuning run at" in capsys.readouterr().out
    # probes.md lists each probe beside its tuning run: the change, and Δ eval where that run exists.
    table = (tmp_path / "probes.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| mdl | imp_tables=shared")]
    assert len(rows) == 2 and "| 0 | 0.8100 | +0.0100 |" in rows[0] and "| 1 | 0.8100 | — |" in rows[1]
    assert main(["bench", "movielens1m", "--out", str(tmp_path), "--probe", "imp_table=shared"]) == 2
    err = capsys.readouterr().err
    assert "--probe imp_table: not a flag of mdl" in err and "imp_tables" in err
    # Learning rates and the OOV id rate are training settings; the rest goes to the model's constructor.
    assert {"dense_lr", "sparse_lr", "oov_rate"} <= b.trial_keys("shared_bottom")
    assert b.split_trial({"dense_lr": 1e-3, "oov_rate": 0.1, "num_layers": 2, "priors": True}) == (
        {"dense_lr": 1e-3, "oov_rate": 0.1}, {"num_layers": 2})
    # A data probe: priors=true trains on the dataset variant with the item priors (neither a model nor a training
    # setting), and a run on the wrong variant is refused before it trains.
    seen = []
    def data(protocol, cache, priors=False):
        seen.append(priors)
        return FakeData(protocol, cache, priors)

    monkeypatch.setattr(b, "Data", data)
    b.probe(tmp_path, tmp_path, "rankmixer", {"priors": True})
    assert seen == [True] and trained[-1] == ("rankmixer", {**b.tuning_grid("rankmixer")[0], "priors": True}, 0)
    assert main(["bench", "movielens1m", "--out", str(tmp_path), "--probe", "priors=False"]) == 2
    assert "--probe priors=False: expected true or false" in capsys.readouterr().err
    # A training setting out of range is refused before any data is read, by the rule compile applies.
    before = (tmp_path / "probes.jsonl").read_text()
    for flag, message in (("dense_lr=-0.001", "dense_lr must be > 0, got -0.001"),
                          ("warmup_steps=1.5", "warmup_steps must be a whole number of steps, got 1.5"),
                          ("oov_rate=\"a\"", "oov_rate must be a finite number, got 'a'")):
        assert main(["bench", "movielens1m", "--out", str(tmp_path), "--probe", flag]) == 2
        assert f"--probe {flag}: {message}" in capsys.readouterr().err, flag
    assert (tmp_path / "probes.jsonl").read_text() == before
    monkeypatch.undo()
    with pytest.raises(ValueError, match="needs the dataset with priors"):
        b.train_one(type("D", (), {"priors": False, "dir": tmp_path / "movielens1m"})(), "mdl", {"priors": True}, 0,
                    tmp_path)


def test_movielens1m_fixed_width_probe_keeps_the_tuning_runs_width(tmp_path, monkeypatch, capsys):
    """An ablation at a fixed width (--probe-fixed-width) is trained at the width its tuning run was sized to and is
    not re-sized to the budget; without that tuning run it is one clear error, nothing trained."""
    from mdl_tf.bench import movielens1m as b
    from mdl_tf.cli import main

    trained = []
    monkeypatch.setattr(b, "train_one", lambda data, model, trial, seed, work: trained.append(trial) or
                        _fake_record(model, "random", trial, seed, 0.81, 0.80))
    monkeypatch.setattr(b, "Data", lambda protocol, cache, priors=False: type("D", (), {"protocol": protocol})())
    base = b.tuning_grid("mdl")[0]
    assert main(["bench", "movielens1m", "--out", str(tmp_path), "--probe", "use_task_tokens=false",
                 "--probe-fixed-width"]) == 2
    assert "has not run yet" in capsys.readouterr().err and trained == []
    tuned = _fake_record("mdl", "random", base, 0, 0.80, 0.80)
    tuned["hparams"] = {**tuned.get("hparams", {}), "d_model": 64, "ffn_multiplier": 4, "num_layers": 2}
    b.append_run(tmp_path / "runs.jsonl", tuned)
    b.probe(tmp_path, tmp_path, "mdl", {"use_task_tokens": False}, keep_width=True)
    assert trained == [{**base, "d_model": 64, "ffn_multiplier": 4, "use_task_tokens": False}]
    # probes.md: the copied width is shown as such; a probed width knob (sized to the budget) is the change.
    b.probe(tmp_path, tmp_path, "mdl", {"ffn_multiplier": 2})
    table = (tmp_path / "probes.md").read_text()
    assert "| use_task_tokens=False (width d_model=64, ffn_multiplier=4) |" in table
    assert "| ffn_multiplier=2 (sized to d_model=64) |" in table
    trained.pop()
    # A trial that sets the width trains at it; any other is sized to the budget.
    tc, hparams = b.train_config("mdl", trained[0], 0, 900_000)
    assert tc.dense_params is None and hparams["d_model"] == 64 and "dense_lr" not in hparams
    assert b.train_config("mdl", base, 0, 900_000)[0].dense_params == 900_000
    # A width copied by a probe never makes it stand in for a planned (sized) run.
    assert not b._stands_for("mdl", {**base, "d_model": 128}, base)
    # Seeds of the point sized to another width: no single reference, one clear error.
    other = _fake_record("mdl", "random", base, 1, 0.80, 0.80)
    other["hparams"] = {**tuned["hparams"], "d_model": 68}
    b.append_run(tmp_path / "runs.jsonl", other)
    with pytest.raises(UserError, match=r"seeds \[1\] differ"):
        b.probe(tmp_path, tmp_path, "mdl", {"use_task_tokens": False}, keep_width=True)
    # The probe's own flags without --probe would silently run the whole plan: refused.
    capsys.readouterr()
    assert main(["bench", "movielens1m", "--out", str(tmp_path), "--probe-fixed-width"]) == 2
    assert "give the flag to change with --probe" in capsys.readouterr().err


def test_movielens1m_adopts_a_probe_only_when_a_rerun_reproduced_it(tmp_path, monkeypatch):
    """A probe of a flag that became the default is the tuning run of its point: the other seeds' probes are adopted
    into runs.jsonl (not re-trained) once the seed-0 tuning run under the new default reproduced its probe's eval AUC;
    a run that does not reproduce it adopts nothing."""
    from mdl_tf.bench import movielens1m as b

    from mdl_tf.models.mdl import MDL_DEFAULTS

    grid = b.tuning_grid("mdl")
    # The realistic point: num_layers of the grid point equals MDL's default, and the probe set imp_tables.
    base = next(t for t in grid if t["num_layers"] == MDL_DEFAULTS["num_layers"])
    at_default = {**base, "imp_tables": "shared"}  # the probe's flag, now MDL's default
    assert b._stands_for("mdl", at_default, base)
    assert not b._stands_for("mdl", {**base, "imp_tables": "own"}, base)  # not the default: a different model
    assert not b._stands_for("mdl", {**base, "sparse_lr": 0.02}, base)    # a training setting is never a default
    assert not b._stands_for("mdl", at_default, {**base, "num_layers": 1})
    probes = {}
    for seed, auc in ((0, 0.82), (1, 0.83), (2, 0.84)):
        rec = _fake_record("mdl", "random", at_default, seed, auc, auc - 0.01)
        probes[rec["key"]] = rec
    for rec in probes.values():
        b.append_run(tmp_path / "probes.jsonl", rec)

    def tuning(base_eval):
        return {r["key"]: r for r in [_fake_record("mdl", "random", t, 0, base_eval if t == base else 0.70, 0.7)
                                      for t in grid]}

    todo = b.plan(tuning(0.8200001), ("random",), ("mdl",))
    assert todo == [("random", "mdl", base, 1), ("random", "mdl", base, 2)]
    assert b.adoptable_probes(tuning(0.8210), probes, todo) == []  # not reproduced: nothing stands in
    adopted = b.adoptable_probes(tuning(0.8200001), probes, todo)
    assert [(a[0], a[1]["seed"], a[2]["seed"]) for a in adopted] == [(todo[0], 1, 0), (todo[1], 2, 0)]
    # Evidence must come from the same probe configuration (fingerprint) and from a run that was trained.
    other_fp = {k: {**r, "key": r["key"][:-10] + "0123456789"} for k, r in probes.items() if r["seed"] == 0}
    seed12 = {k: r for k, r in probes.items() if r["seed"] != 0}
    assert b.adoptable_probes(tuning(0.8200001), {**seed12, **other_fp}, todo) == []
    runs = tuning(0.8200001)
    runs[b.run_key("mdl", "random", base, 0)]["adopted_from"] = "some probe"
    assert b.adoptable_probes(runs, probes, todo) == []

    trained = []

    def fake_train_one(data, model, trial, seed, work):
        trained.append((model, trial, seed))
        return _fake_record(model, data.protocol, trial, seed, 0.82 if trial == base else 0.70, 0.7)

    class FakeData:
        def __init__(self, protocol, cache, priors=False):
            self.protocol, self.priors = protocol, priors

    monkeypatch.setattr(b, "train_one", fake_train_one)
    monkeypatch.setattr(b, "Data", FakeData)
    monkeypatch.setattr(b, "write_summary", lambda out, runs: {})
    b.run(tmp_path, tmp_path, protocols=("random",), models=("mdl",))
    assert trained == [("mdl", t, 0) for t in grid]  # seeds 1 and 2 came from the probes
    runs = b.read_runs(tmp_path / "runs.jsonl")
    for seed, auc in ((1, 0.83), (2, 0.84)):
        rec = runs[b.run_key("mdl", "random", base, seed)]
        assert rec["trial"] == base and rec["eval"]["mean_auc"] == auc
        assert rec["adopted_from"] == b.run_key("mdl", "random", at_default, seed)
        assert rec["adoption_evidence"] == {"seed": 0, "probe_eval": 0.82, "rerun_eval": 0.82}
    from mdl_tf.bench.movielens1m_report import markdown, summarise

    assert "2 runs were adopted from probes" in markdown(summarise(runs))
