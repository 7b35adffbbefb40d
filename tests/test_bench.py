"""Smoke runs of the benchmark commands: output files and their schema (never timings)."""
import json

import pytest

from mdl_tf.cli import main


@pytest.mark.slow
def test_bench_quality_smoke_writes_json_markdown_and_plot(tmp_path):
    out = tmp_path / "results"
    assert main(["bench", "quality", "--dataset", "synthetic", "--rows", "3000", "--models", "mdl,mmoe",
                 "--seeds", "2", "--epochs", "1", "--batch-size", "256", "--dense-params", "60000",
                 "--ablations", "no_task_tokens,no_scenario_attention",
                 "--out", str(out)]) == 0
    result = json.loads((out / "synthetic" / "quality.json").read_text())
    assert result["split_reported"] == "test" and result["seeds"] == 2
    rows = result["rows"]
    assert set(rows) == {"mdl", "mmoe", "mdl:no_task_tokens", "mdl:no_scenario_attention"}
    for row in rows.values():
        assert abs(row["params"]["dense"] - 60000) <= 0.05 * 60000
        assert row["mean_auc"]["n"] == 2 and {"home/click", "feed/purchase"} <= set(row["cells"])
    assert set(result["mdl_gain_over_best_baseline"]["home/click"]) == {"best_baseline", "best_baseline_auc",
                                                                     "relative_gain"}
    table = (out / "synthetic" / "quality.md").read_text()
    assert "MDL vs best baseline" in table and "GAUC click" in table and result["command"] in table
    assert (out / "synthetic" / "quality.png").stat().st_size > 1000


@pytest.mark.slow
def test_bench_speed_smoke_writes_report_comparison_and_scaling(tmp_path):
    from mdl_tf.bench.speed import run_speed_bench

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
def test_bench_pipeline_smoke_times_every_component(tmp_path):
    out = tmp_path / "results"
    assert main(["bench", "pipeline", "--rows", "1500", "--train-steps", "10", "--out", str(out)]) == 0
    result = json.loads((out / "pipeline.json").read_text())
    assert result["command"].startswith("mdl-tf bench pipeline --rows 1500") and result["train_steps"] == 10
    (run,) = result["runs"]
    assert run["rows"] == 1500 and run["pipeline_seconds"] > 0
    for component in ("CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "Transform",
                      "Trainer", "Evaluator"):
        assert run["components"].get(component, -1) >= 0, (component, run["components"])
    assert sum(run["components"].values()) <= run["pipeline_seconds"] + 1
    assert "| Transform |" in (out / "pipeline.md").read_text()
    assert (out / "pipeline.png").stat().st_size > 1000
