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
