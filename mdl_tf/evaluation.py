"""Offline metrics per task, per scenario x task, and user-grouped AUC (MDL_SPEC §5.4).

Masked labels are filtered out before any metric. A slice with a single class has no AUC: it is reported as None
(JSON null), never as a made-up number.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

UNSEEN = "unseen"


def auc(labels: np.ndarray, scores: np.ndarray):
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged; None when only one class is present."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7):
    if len(labels) == 0:
        return None
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def grouped_auc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray):
    """Unweighted mean of per-group AUC over groups with both classes (GAUC/QAUC); None if no such group."""
    groups = np.asarray(groups)
    order = np.argsort(groups, kind="stable")
    g, y, s = groups[order], np.asarray(labels)[order], np.asarray(scores)[order]
    bounds = np.flatnonzero(g[1:] != g[:-1]) + 1
    values = [auc(yy, ss) for yy, ss in zip(np.split(y, bounds), np.split(s, bounds))]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def task_metrics(labels, probs) -> dict:
    labels = np.asarray(labels)
    return {"auc": auc(labels, probs), "logloss": logloss(labels, probs), "count": int(len(labels)),
            "positive_rate": float(np.mean(labels)) if len(labels) else None}


def evaluate_predictions(task_names, scenario_names, probs, labels, label_mask, scenario_mask,
                         users=None) -> dict:
    """probs/labels/label_mask [N, N_t], scenario_mask [N, N_s] -> the metrics.json body (minus model/params).

    per_scenario holds every scenario with at least one row (rows of several scenarios count in each), plus
    "unseen" for rows of a scenario value the model was not trained on.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    label_mask, scenario_mask = np.asarray(label_mask) > 0, np.asarray(scenario_mask) > 0
    out = {"overall": {}, "per_scenario": {}, "gauc": {}}
    for i, task in enumerate(task_names):
        keep = label_mask[:, i]
        out["overall"][task] = task_metrics(labels[keep, i], probs[keep, i])
        out["gauc"][task] = (grouped_auc(np.asarray(users)[keep], labels[keep, i], probs[keep, i])
                             if users is not None else None)
    slices = {name: scenario_mask[:, k] for k, name in enumerate(scenario_names)}
    slices[UNSEEN] = ~scenario_mask.any(axis=1)
    for name, rows in slices.items():
        if not rows.any():
            continue
        out["per_scenario"][name] = {
            task: task_metrics(labels[rows & label_mask[:, i], i], probs[rows & label_mask[:, i], i])
            for i, task in enumerate(task_names)}
    return out


def mean_auc(metrics: dict) -> float | None:
    """Mean AUC over the defined scenario x task cells (unseen excluded), a single number for model selection."""
    values = [m["auc"] for s, cell in metrics["per_scenario"].items() if s != UNSEEN
              for m in cell.values() if m["auc"] is not None]
    return float(np.mean(values)) if values else None
