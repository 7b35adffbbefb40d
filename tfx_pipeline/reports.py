"""Readable views of an Evaluator output: per-task tables (rows = slices), the blessing verdict with the thresholds
that decided it, and matplotlib plots. The notebooks (notebooks/tfma_sliced_evaluation.ipynb) are thin on top of this.

Nothing here assumes MDL: tables and plots are built from whatever outputs, slices and metrics the Evaluator wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tfx_pipeline.artifacts import evaluation_metrics

COLUMNS = {"auc": "AUC", "auc_precision_recall": "AUC-PR", "binary_crossentropy": "logloss",
           "calibration": "calibration", "example_count": "examples", "mean_label": "positive rate",
           "mean_prediction": "mean prediction"}
OVERALL = "Overall"


def _slice_order(names) -> list:
    return sorted(names, key=lambda s: (s != OVERALL, s))


def task_tables(eval_uri) -> dict:
    """{output: DataFrame} with one row per slice (Overall first) and the COLUMNS metrics; when the run had a blessed
    baseline, "baseline AUC" and "Δ AUC" (candidate - baseline) columns too."""
    candidate = evaluation_metrics(eval_uri, "candidate")
    baseline = evaluation_metrics(eval_uri, "baseline")
    diff = evaluation_metrics(eval_uri, "diff")
    outputs = sorted({o for per_slice in candidate.values() for o in per_slice})
    tables = {}
    for output in outputs:
        rows = {}
        for name in _slice_order(candidate):
            metrics = candidate[name].get(output, {})
            row = {label: metrics.get(key) for key, label in COLUMNS.items()}
            if baseline:
                row["baseline AUC"] = baseline.get(name, {}).get(output, {}).get("auc")
                row["Δ AUC"] = diff.get(name, {}).get(output, {}).get("auc")
            rows[name] = row
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "slice"
        tables[output] = frame
    return tables


def _eval_config(eval_uri) -> dict:
    return json.loads((Path(eval_uri) / "eval_config.json").read_text())["evalConfig"]


def slice_columns(eval_uri) -> list:
    """The columns the Evaluator sliced by, in config order (the pipeline puts the scenario column first)."""
    return [spec["featureKeys"][0] for spec in _eval_config(eval_uri).get("slicingSpecs", [])
            if len(spec.get("featureKeys", [])) == 1]


def _thresholds(eval_uri) -> list:
    """[(output, metric, slice description, kind, bound)] from the eval_config the Evaluator ran with."""
    config = _eval_config(eval_uri)
    found = []
    for spec in config.get("metricsSpecs", []):
        for output in spec.get("outputNames", [""]):
            for metric in spec.get("metrics", []):
                gates = [(metric.get("threshold"), "every slice")] if metric.get("threshold") else []
                gates += [(t["threshold"], " & ".join(json.dumps(s) for s in t.get("slicingSpecs", [])) or "{}")
                          for t in metric.get("perSliceThresholds", [])]
                for threshold, where in gates:
                    where = OVERALL if where == "{}" else where
                    value = threshold.get("valueThreshold", {})
                    for side in ("lowerBound", "upperBound"):
                        if side in value:
                            found.append((output, metric["className"], where, f"value {side}", value[side]))
                    change = threshold.get("changeThreshold", {})
                    for side in ("absolute", "relative"):
                        if side in change:
                            found.append((output, metric["className"], where,
                                          f"change {side} ({change.get('direction', '')})", change[side]))
    return found


def _describe_threshold(threshold) -> str:
    import tensorflow_model_analysis as tfma

    if threshold.HasField("change_threshold"):
        c = threshold.change_threshold
        bound = c.absolute.value if c.HasField("absolute") else c.relative.value
        higher = c.direction == tfma.MetricDirection.HIGHER_IS_BETTER
        return f"change >= {bound:g}" if higher else f"change <= {bound:g}"
    v = threshold.value_threshold
    parts = ([f">= {v.lower_bound.value:g}"] if v.HasField("lower_bound") else []) + (
        [f"<= {v.upper_bound.value:g}"] if v.HasField("upper_bound") else [])
    return "value " + " and ".join(parts)


def blessing(eval_uri) -> tuple:
    """(blessed, DataFrame of every threshold with the measured value and pass/fail, list of failure messages).

    Without a blessed baseline, change thresholds are not applied (TFX drops them and the run is "rubber-stamped")."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(str(eval_uri))
    failed_keys, failures = set(), []
    for per_slice in result.metric_validations_per_slice:
        for f in per_slice.failures:
            key = f.metric_key
            failed_keys.add((key.output_name, key.name, key.is_diff))
            what = "change against the baseline" if key.is_diff else "value"
            failures.append(f"{key.output_name} {key.name} {what} {f.metric_value.double_value.value:.4f} fails "
                            f"{_describe_threshold(f.metric_threshold)}" + (f" ({f.message})" if f.message else ""))
    failures += [f"no data for threshold slice {s}" for s in result.missing_slices]
    candidate = evaluation_metrics(eval_uri, "candidate")
    diff = evaluation_metrics(eval_uri, "diff")
    rows = []
    for output, metric, where, kind, bound in _thresholds(eval_uri):
        key = "auc" if metric == "AUC" else metric.lower()
        is_change = kind.startswith("change")
        measured = (diff if is_change else candidate).get(where, {}).get(output, {}).get(key)
        rows.append({"output": output, "metric": metric, "slice": where, "threshold": kind, "bound": bound,
                     "measured": measured, "passed": (output, key, is_change) not in failed_keys})
    return bool(result.validation_ok), pd.DataFrame(rows), failures


def scenario_rows(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows of one slicing column (e.g. every `scenario:<value>`), indexed by the value."""
    prefix = f"{column}:"
    rows = table[[i.startswith(prefix) for i in table.index]]
    return rows.rename(index=lambda i: i[len(prefix):])


def plot_auc_by_slice(tables: dict, column: str):
    """One bar group per task: AUC of every `column` slice, candidate next to baseline when there is one."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.6), squeeze=False)
    for ax, (output, table) in zip(axes[0], tables.items()):
        rows = scenario_rows(table, column)
        cols = ["AUC"] + (["baseline AUC"] if "baseline AUC" in rows else [])
        rows[cols].rename(columns={"AUC": "candidate", "baseline AUC": "baseline"}).plot.bar(ax=ax, rot=0)
        ax.set_title(output)
        ax.set_ylabel("AUC")
        low, high = rows[cols].min().min(), rows[cols].max().max()
        ax.set_ylim(max(0.0, (low if pd.notna(low) else 0.5) - 0.05), min(1.0, (high if pd.notna(high) else 1) + 0.05))
        ax.set_xlabel(column)
    fig.tight_layout()
    return fig


def plot_calibration_by_slice(tables: dict, column: str):
    """Mean prediction against mean label (positive rate) per `column` slice and task; the diagonal is calibrated."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 4), squeeze=False)
    for ax, (output, table) in zip(axes[0], tables.items()):
        rows = scenario_rows(table, column)
        ax.scatter(rows["positive rate"], rows["mean prediction"])
        for name, r in rows.iterrows():
            ax.annotate(name, (r["positive rate"], r["mean prediction"]), textcoords="offset points", xytext=(4, 4))
        top = float(max(rows["positive rate"].max(), rows["mean prediction"].max()) * 1.2) or 1.0
        ax.plot([0, top], [0, top], "--", color="grey", linewidth=1)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("mean label")
        ax.set_ylabel("mean prediction")
        ax.set_title(output)
    fig.tight_layout()
    return fig
