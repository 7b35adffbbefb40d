"""Both notebooks run headless (nbclient, Keras-2 kernel) on a small pipeline output and show what they promise."""
import nbformat
import pytest

from mdl_tf import notebooks
from mdl_tf.data import synthetic
from tfx_pipeline import artifacts


def _outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    html, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data:
                html.append(data["text/html"])
            images += "image/png" in data
            assert out.get("output_type") != "error", out
    return html, images


@pytest.mark.slow
def test_tfma_notebook_shows_per_scenario_tables_blessing_and_plots(pipeline_runs, tmp_path):
    _, root, _ = pipeline_runs
    out = notebooks.execute(notebooks.NOTEBOOKS_DIR / "tfma_sliced_evaluation.ipynb", tmp_path / "tfma.ipynb",
                            {"pipeline_root": root})
    html, images = _outputs(out)
    task_tables = [h for h in html if "AUC-PR" in h and "positive rate" in h]
    assert len(task_tables) == 2  # click and purchase
    for table in task_tables:
        assert "Overall" in table and all(f"scenario:{s}" in table for s in synthetic.SCENARIOS)
        assert "baseline AUC" in table  # the second run had a blessed baseline
    assert any("lowerBound" in h and "measured" in h for h in html)  # the blessing thresholds
    assert images >= 2


@pytest.mark.slow
def test_attention_notebook_shows_maps_for_a_pushed_model(pipeline_runs, tmp_path):
    data, root, _ = pipeline_runs
    model_dir = artifacts.pushed_versions(root / "serving", "mdl")[0]  # the MDL run (the second is MMoE)
    out = notebooks.execute(notebooks.NOTEBOOKS_DIR / "mdl_attention_maps.ipynb", tmp_path / "attention.ipynb",
                            {"model_dir": model_dir, "data_dir": data})
    html, images = _outputs(out)
    table = next(h for h in html if "behaviour" in h)
    assert all(s in table for s in synthetic.SCENARIOS) and "click" in table and "purchase" in table
    assert images >= 2  # the overall maps and at least one scenario difference


def test_a_failing_notebook_fails(tmp_path):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="no Evaluator output|ML Metadata"):
        notebooks.execute(notebooks.NOTEBOOKS_DIR / "tfma_sliced_evaluation.ipynb", tmp_path / "x.ipynb",
                          {"pipeline_root": tmp_path / "empty"})
