import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

meta = {"kernelspec": {"name": "mdl-tf", "display_name": "mdl-tf (Python 3.10, Keras 2)", "language": "python"},
        "language_info": {"name": "python"}}

tfma_nb = new_notebook(metadata=meta, cells=[
    new_markdown_cell("""# Per-scenario × per-task evaluation (TFMA)

Reads the newest Evaluator output of a pipeline run (found through ML Metadata), loads it with TFMA, and shows, for
every task head: one table with the overall slice and each scenario (and any other slice the config names), the
blessing verdict with the thresholds that decided it, per-scenario AUC bars (candidate next to the blessed baseline
when there is one) and per-scenario calibration. Nothing here is MDL-specific: it works for any model the pipeline
trained.

Run it headless with `mdl-tf notebooks run --out executed/ --pipeline-root out/demo/pipeline`, or open it in
Jupyter with a kernel that sets `TF_USE_LEGACY_KERAS=1` (`mdl-tf notebooks kernel` installs one)."""),
    new_code_cell("""# Parameters
import os

# The README main command (`make run`) writes its pipeline root here.
PIPELINE_ROOT = os.environ.get("MDL_PIPELINE_ROOT", "../out/demo/pipeline")""", metadata={"tags": ["parameters"]}),
    new_code_cell("""os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Keras 2, before TensorFlow loads
import warnings

warnings.filterwarnings("ignore")
import logging

logging.getLogger("tensorflow").setLevel(logging.ERROR)
import matplotlib

matplotlib.use("module://matplotlib_inline.backend_inline")
import matplotlib.pyplot as plt
import pandas as pd
import tensorflow_model_analysis as tfma
from IPython.display import Markdown, display

import mdl_tf  # noqa: F401
from tfx_pipeline import artifacts, reports

evaluation = artifacts.latest_evaluation(PIPELINE_ROOT)
assert evaluation, f"no Evaluator output under {PIPELINE_ROOT}: run `make run` or `mdl-tf pipeline run` first"
EVAL_URI = evaluation["uri"]
tables = reports.task_tables(EVAL_URI)
has_baseline = any("baseline AUC" in t for t in tables.values())
# TFMA's own view of the same output (with a baseline, the candidate's results are stored under its model name).
result = tfma.load_eval_result(EVAL_URI, model_name=tfma.CANDIDATE_KEY if has_baseline else None)
print(f"Evaluator output: {EVAL_URI}")
print(f"slices: {len(result.slicing_metrics)}; baseline: {'yes' if has_baseline else 'no (first blessed model)'}")"""),
    new_markdown_cell("## Metrics per task: overall and per slice"),
    new_code_cell("""pd.set_option("display.precision", 4)
for output, table in tables.items():
    display(Markdown(f"### `{output}`"))
    display(table)"""),
    new_markdown_cell("## Blessing"),
    new_code_cell("""blessed, thresholds, failures = reports.blessing(EVAL_URI)
display(Markdown(f"**Blessed: {'yes' if blessed else 'no'}.** " + (
    "Every threshold below passed." if blessed else "Failed: " + "; ".join(failures))
    + ("" if has_baseline else " No blessed baseline existed, so change thresholds were not applied.")))
display(thresholds)"""),
    new_markdown_cell("## Per-scenario AUC and calibration"),
    new_code_cell("""SCENARIO = reports.slice_columns(EVAL_URI)[0]  # the pipeline slices by the scenario column first
reports.plot_auc_by_slice(tables, SCENARIO)
plt.show()"""),
    new_code_cell("""reports.plot_calibration_by_slice(tables, SCENARIO)
plt.show()"""),
])

att_nb = new_notebook(metadata=meta, cells=[
    new_markdown_cell("""# MDL attention maps

The MDL paper's attention analysis on our data: the average attention weight of each scenario token and each task
token over the feature tokens, per layer, labelled with the feature-group names; then how the task tokens' attention
differs between scenarios. Uses any exported MDL model: the newest version the pipeline pushed (default) or the
`saved_model/` of `mdl-tf train`."""),
    new_code_cell("""# Parameters
import os
from pathlib import Path

DATA_DIR = os.environ.get("MDL_DATA_DIR", "../out/demo/data")  # rows from its eval split
MODEL_DIR = os.environ.get("MDL_MODEL_DIR")  # an exported MDL SavedModel; default: newest pushed version
ROWS = 2000
if MODEL_DIR is None:
    versions = sorted(Path("../out/demo/serving/mdl").glob("[0-9]*"), key=lambda p: int(p.name))
    assert versions, "no pushed model under ../out/demo/serving/mdl: run `make run` first, or set MDL_MODEL_DIR"
    MODEL_DIR = str(versions[-1])""", metadata={"tags": ["parameters"]}),
    new_code_cell("""os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Keras 2, before TensorFlow loads
import warnings

warnings.filterwarnings("ignore")
import logging

logging.getLogger("tensorflow").setLevel(logging.ERROR)
import matplotlib

matplotlib.use("module://matplotlib_inline.backend_inline")
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from mdl_tf import attention
from mdl_tf.data.io import read_split

model, cfg, loaded = attention.load_mdl(MODEL_DIR)
frame = read_split(DATA_DIR, "eval", cfg).iloc[:ROWS]
features = attention.transform_rows(loaded, frame, cfg)
print(f"model {MODEL_DIR}: {model.hparams['num_layers']} layers, d={model.hparams['d_model']}; "
      f"{len(frame)} eval rows; feature tokens: {attention.feature_token_labels(model)}")"""),
    new_markdown_cell("## All rows: scenario and task tokens over the feature tokens"),
    new_code_cell("""overall = attention.mean_attention(model, features)
attention.plot_attention(model, overall, title="mean attention weight over feature tokens (all eval rows)")
plt.show()"""),
    new_markdown_cell("## Per scenario: what the task tokens read"),
    new_code_cell("""by_scenario = attention.attention_by_scenario(model, features)
last = len(overall) - 1
labels = attention.feature_token_labels(model)
table = pd.concat({s: pd.DataFrame(maps[last]["task"], index=cfg.task_names, columns=labels)
                   for s, maps in by_scenario.items()}, names=["scenario", "task"])
display(Markdown(f"Task-token attention in the last layer (layer {last + 1}), rows of each primary scenario:"))
display(table.round(4))"""),
    new_code_cell("""names = list(by_scenario)
for other in names[1:]:
    attention.plot_scenario_difference(model, by_scenario, other, names[0])
    plt.show()"""),
])

nbformat.write(tfma_nb, "notebooks/tfma_sliced_evaluation.ipynb")
nbformat.write(att_nb, "notebooks/mdl_attention_maps.ipynb")
