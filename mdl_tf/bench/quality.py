"""`mdl-tf bench quality`: MDL against the baselines (and MDL's ablations) on one dataset, at one dense-parameter
budget, over several seeds. Early stopping reads the eval split; every reported number is on the held-out test split.

Writes `<out>/<dataset>/quality.json`, `quality.md` (per scenario x task AUC mean ± std, per-task GAUC, MDL's relative
gain over the best baseline in every cell) and `quality.png`, with the machine and the exact command.

Resumable: each finished (row, seed) (a row is a model or one of MDL's ablations) appends one line to
`<out>/<dataset>/runs.jsonl` under a key holding a fingerprint of everything that decides its result besides the seed
(the model's defaults, the training defaults, the row's hyperparameters and the command's settings); a re-run skips
every run already there and the tables are rewritten after every run (marked partial until the plan is complete), so
the benchmark survives a killed session.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mdl_tf.bench.machine import machine_info
from mdl_tf.bench.movielens1m import append_run, drop_neutral, model_defaults, read_runs
from mdl_tf.data import movielens, synthetic
from mdl_tf.models.mdl import ABLATIONS
from mdl_tf.training.trainer import TrainConfig, train
from mdl_tf.utils import atomic_write_text, write_json

DATASETS = ("synthetic", "movielens")
# Bump when a change outside the models' and TrainConfig's defaults (the data, the transform, the loop) changes results.
RUN_VERSION = 1


def _prepare(dataset: str, work: Path, rows: int) -> Path:
    data = work / "data"
    if dataset == "synthetic":
        synthetic.write(data, rows=rows, seed=0)
    elif dataset == "movielens":
        movielens.write(data, src=movielens.fetch())
    else:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    return data


def _cells(metrics: dict) -> dict:
    """{(scenario, task): auc} of the known scenarios (unseen excluded) on the test split."""
    return {(s, t): m["auc"] for s, cell in metrics["test"]["per_scenario"].items() if s != "unseen"
            for t, m in cell.items() if m["auc"] is not None}


def _mean_std(values) -> dict:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return {"mean": float(arr.mean()) if arr.size else None, "std": float(arr.std()) if arr.size else None,
            "n": int(arr.size)}


def summarise(runs: dict) -> dict:
    """runs {row name: [metrics.json dicts, one per seed]} -> per-row cell statistics and MDL's gains."""
    rows = {}
    for name, per_seed in runs.items():
        cells = [_cells(m) for m in per_seed]
        keys = sorted(set().union(*cells))
        rows[name] = {
            "cells": {f"{s}/{t}": _mean_std([c.get((s, t)) for c in cells]) for s, t in keys},
            "gauc": {t: _mean_std([m["test"]["gauc"][t] for m in per_seed]) for t in per_seed[0]["test"]["gauc"]},
            "mean_auc": _mean_std([m["test"]["mean_scenario_task_auc"] for m in per_seed]),
            "params": per_seed[0]["params"], "hparams": per_seed[0]["hparams"],
            "train_seconds": _mean_std([m["train_seconds"] for m in per_seed])}
    baselines = [n for n in rows if n != "mdl" and not n.startswith("mdl:")]
    gains = {}
    if "mdl" in rows and baselines:
        for cell, stats in rows["mdl"]["cells"].items():
            best = max((rows[b]["cells"].get(cell, {}).get("mean") or 0.0, b) for b in baselines)
            gains[cell] = {"best_baseline": best[1], "best_baseline_auc": best[0],
                           "relative_gain": (stats["mean"] - best[0]) / best[0] if best[0] else None}
    return {"rows": rows, "mdl_gain_over_best_baseline": gains}


def markdown(summary: dict, header: str) -> str:
    rows = summary["rows"]
    cells = sorted({c for r in rows.values() for c in r["cells"]})
    lines = [header, "", "| model | dense params | mean AUC | " + " | ".join(cells) + " |",
             "|---|---|---|" + "---|" * len(cells)]
    fmt = lambda s: "–" if s.get("mean") is None else f"{s['mean']:.4f} ± {s['std']:.4f}"  # noqa: E731
    for name, r in rows.items():
        lines.append(f"| {name} | {r['params']['dense']:,} | {fmt(r['mean_auc'])} | "
                     + " | ".join(fmt(r["cells"].get(c, {})) for c in cells) + " |")
    gains = summary["mdl_gain_over_best_baseline"]
    if gains:
        lines.append("| MDL vs best baseline | | | " + " | ".join(
            f"{100 * gains[c]['relative_gain']:+.2f}% ({gains[c]['best_baseline']})"
            if c in gains and gains[c]["relative_gain"] is not None else "–" for c in cells) + " |")
    tasks = sorted({t for r in rows.values() for t in r["gauc"]})
    lines += ["", "| model | " + " | ".join(f"GAUC {t}" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(r["gauc"].get(t, {})) for t in tasks) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    names = list(rows)
    means = [rows[n]["mean_auc"]["mean"] or 0.0 for n in names]
    stds = [rows[n]["mean_auc"]["std"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names)), 3.6))
    ax.bar(names, means, yerr=stds, color=["tab:red" if n == "mdl" else "tab:blue" for n in names], capsize=3)
    ax.set_ylim(min(means) - 0.02, max(means) + 0.02)
    ax.set_ylabel("mean test AUC over scenario x task")
    ax.tick_params(axis="x", rotation=40)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_key(label: str, model: str, hparams: dict, seed: int, settings: dict) -> str:
    """The runs.jsonl key of one (row, seed): `<label>/s<seed>/<fingerprint>`. The fingerprint hashes the model's
    constructor defaults, TrainConfig's defaults that change a result, the row's hyperparameters and `settings`
    (dataset, rows, budget, epochs, batch size, patience): a run recorded under other defaults is trained again."""
    blob = json.dumps({"model": model, "hparams": hparams, "defaults": model_defaults(model),
                       "training": drop_neutral(TrainConfig(model=model).compile_args()),
                       "settings": settings,
                       "version": RUN_VERSION}, sort_keys=True, default=repr)
    return f"{label}/s{seed}/{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def write_results(out: Path, runs: dict, planned: int, seeds: int, command: str, dataset: str,
                  dense_params: int, machines: list) -> dict:
    """Write quality.{json,md,png} from `runs` ({row: [metrics of each finished seed]}); `planned` is the plan's run
    count, and the tables say "partial" while fewer runs than that are in. `machines`: the distinct machines the
    runs were recorded on (a resumed benchmark may span several)."""
    done = sum(len(v) for v in runs.values())
    summary = summarise({k: v for k, v in runs.items() if v})
    result = {"machine": machine_info(), "machines_of_runs": machines, "command": command, "dataset": dataset,
              "seeds": seeds, "dense_params_budget": dense_params, "split_reported": "test",
              "model_selection_split": "eval",
              "runs_done": done, "runs_planned": planned, "complete": done == planned, **summary}
    status = "" if done == planned else f"; partial: {done} of {planned} runs, resumable"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "quality.json", result)
    atomic_write_text(out / "quality.md", markdown(summary, f"`{command}` (test split; mean ± std over {seeds} "
                                                             f"seed(s); {result['machine']['cpus']} CPUs{status})"))
    plot(summary, out / "quality.png")
    return result


def run_quality_bench(dataset: str, models: list, seeds: int, out_dir, dense_params: int | None = None,
                      epochs: int = 10, batch_size: int = 512, patience: int = 2, ablations=tuple(ABLATIONS),
                      rows: int = 50_000, d_model_reference: int = 64) -> dict:
    from mdl_tf import config as cfgmod
    from mdl_tf.data.io import has_split, read_split
    from mdl_tf.data.transform import fit_stats, vocab_sizes
    from mdl_tf.models.sizing import dense_params as count_dense
    from mdl_tf.models.sizing import size_to_budget

    unknown = sorted(set(ablations or ()) - set(ABLATIONS))
    if unknown:  # before any data is prepared
        raise ValueError(f"unknown ablation(s) {unknown}; available: {sorted(ABLATIONS)}")
    out = Path(out_dir) / dataset
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = _prepare(dataset, work, rows)
        cfg = cfgmod.load(data)
        # Read and validated once: every (model, seed) trains on these frames.
        frames = {s: read_split(data, s, cfg) for s in ("train", "eval", "test") if has_split(data, s)}
        sizes = vocab_sizes(cfg, fit_stats(frames["train"], cfg))
        if dense_params is None:  # the budget: MDL at the reference width
            dense_params = count_dense("mdl", cfg, sizes, d_model=d_model_reference)
        plan = [(m, m, {}, dense_params) for m in models]
        if "mdl" in models and ablations:
            # Ablations at the full MDL's width (its sized d and k), not re-sized to the budget: a re-sized
            # ablation changes its width too, and its reading would mix the removed part with the width change.
            width = {k: v for k, v in size_to_budget("mdl", cfg, sizes, dense_params)["hparams"].items()
                     if k in ("d_model", "ffn_multiplier")}
            plan += [(f"mdl:{a}", "mdl", {**width, **ABLATIONS[a]}, None) for a in ablations]
        settings = {"dataset": dataset, "rows": rows if dataset == "synthetic" else None,
                    "dense_params": dense_params, "epochs": epochs, "batch_size": batch_size, "patience": patience}
        command = (f"mdl-tf bench quality --dataset {dataset} --models {','.join(models)} --seeds {seeds} "
                   f"--dense-params {dense_params} --epochs {epochs} --batch-size {batch_size} --patience {patience}"
                   + f" --ablations {','.join(ablations) if ablations else 'none'}"
                   + (f" --rows {rows}" if dataset == "synthetic" else ""))
        runs_path = out / "runs.jsonl"
        done = read_runs(runs_path)
        keyed = [(label, model, hp, budget, seed, run_key(label, model, hp, seed, {**settings, "budget": budget}))
                 for label, model, hp, budget in plan for seed in range(seeds)]
        todo = [k for k in keyed if k[-1] not in done]
        if len(todo) < len(keyed):
            print(f"bench quality: {len(keyed) - len(todo)} of {len(keyed)} runs already in {runs_path}; "
                  f"training the other {len(todo)}")

        def collected() -> dict:
            return {label: [done[k[-1]]["metrics"] for k in keyed if k[0] == label and k[-1] in done]
                    for label, *_ in plan}

        def machines() -> list:
            found = [done[k[-1]].get("machine") for k in keyed if k[-1] in done]
            return [json.loads(m) for m in sorted({json.dumps(m, sort_keys=True) for m in found if m})]

        for label, model, hp, budget, seed, key in tqdm(todo, desc=f"quality on {dataset}", unit="run"):
            tc = TrainConfig(model=model, epochs=epochs, batch_size=batch_size, seed=seed, verbose=0,
                             early_stopping_patience=patience, dense_params=budget, export=False)
            metrics = train(data, data, work / f"{label}-{seed}", tc, dict(hp), frames=frames)
            done[key] = {"key": key, "label": label, "seed": seed, "metrics": metrics, "machine": machine_info()}
            append_run(runs_path, done[key])
            write_results(out, collected(), len(keyed), seeds, command, dataset, dense_params, machines())
    return write_results(out, collected(), len(keyed), seeds, command, dataset, dense_params, machines())
