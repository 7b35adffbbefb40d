"""Per-model dense learning rate, selected on the eval split, then the test split at the selected rate.

The published quality run (`results/movielens/quality.json`) trains every model at RMSprop 1e-3. This script asks
whether that shared rate decides the ranking: for MDL and the three best baselines it trains seed 0 at each rate in
RATES and reads the eval split only; each model's best eval rate is then run on seeds 0-2 and reported on test.
A model whose best rate is the published 1e-3 reuses its published test numbers (same configuration and seeds).

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/lr_selection.py   # ~35 min on 2 cores

Writes results/movielens/lr_selection.{json,md}. Rows already in <work>/runs.jsonl are not trained again.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import mdl_tf  # noqa: E402,F401  (Keras 2 before TensorFlow)
from mdl_tf.bench.machine import machine_info  # noqa: E402
from mdl_tf.bench.quality import _mean_std as mean_std  # noqa: E402  (the published table's statistics)
from mdl_tf.data import movielens  # noqa: E402
from mdl_tf.models.base import DEFAULT_DENSE_LR  # noqa: E402
from mdl_tf.training.trainer import TrainConfig, train  # noqa: E402
from mdl_tf.utils import atomic_write_text, write_json  # noqa: E402

MODELS = ("mdl", "dffm", "pepnet", "mmoe")
RATES = (3e-4, 1e-3, 3e-3)
SEEDS = 3
RESULTS = Path(__file__).parent / "results" / "movielens"


def main(work: Path) -> None:
    published = json.loads((RESULTS / "quality.json").read_text())
    budget = published["dense_params_budget"]
    data = work / "data"
    if not data.exists():
        movielens.write(data, src=movielens.fetch())
    log = work / "runs.jsonl"
    done = {(r["model"], r["dense_lr"], r["seed"]): r for r in map(json.loads, log.read_text().splitlines())} \
        if log.exists() else {}

    def run(model: str, lr: float, seed: int, need_test: bool = False) -> dict:
        row = done.get((model, lr, seed))
        if row is None or (need_test and row.get("test_mean_auc") is None):
            tc = TrainConfig(model=model, epochs=10, batch_size=512, seed=seed, verbose=0, early_stopping_patience=1,
                             dense_params=budget, dense_lr=lr)
            m = train(data, data, work / f"{model}-{lr}-{seed}", tc)
            row = {"model": model, "dense_lr": lr, "seed": seed, "eval_mean_auc": m["mean_scenario_task_auc"],
                   "test_mean_auc": m["test"]["mean_scenario_task_auc"], "best_epoch": m["best_epoch"]}
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[(model, lr, seed)] = row
            print(row, flush=True)
        return done[(model, lr, seed)]

    selection = {}
    for model in MODELS:
        evals = {lr: run(model, lr, 0)["eval_mean_auc"] for lr in RATES}
        best = max(evals, key=evals.get)
        if best == DEFAULT_DENSE_LR:
            test = published["rows"][model]["mean_auc"]
            source = "published quality run"
        else:
            test = mean_std([run(model, best, s, need_test=True)["test_mean_auc"] for s in range(SEEDS)])
            source = "this script"
        selection[model] = {"eval_seed0_by_lr": {str(k): v for k, v in evals.items()}, "selected_lr": best,
                            "test_mean_auc": test, "test_source": source,
                            "published_test_mean_auc_at_1e-3": published["rows"][model]["mean_auc"]}
    command = "TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/lr_selection.py"
    write_json(RESULTS / "lr_selection.json", {"machine": machine_info(), "command": command,
                                                "dense_params": budget, "rates": RATES, "models": selection})
    lines = [f"`{command}` (dense RMSprop rate chosen per model on the eval split, seed 0; test mean ± std over "
             f"{SEEDS} seeds at the chosen rate)", "",
             "| model | " + " | ".join(f"eval AUC @ {r:g}" for r in RATES) + " | chosen | test AUC (chosen) | "
             "test AUC @ 1e-3 (published) |", "|---" * (len(RATES) + 4) + "|"]
    for model, s in selection.items():
        t, p = s["test_mean_auc"], s["published_test_mean_auc_at_1e-3"]
        lines.append(f"| {model} | " + " | ".join(f"{v:.4f}" for v in s["eval_seed0_by_lr"].values())
                     + f" | {s['selected_lr']:g} | {t['mean']:.4f} ± {t['std']:.4f} | {p['mean']:.4f} ± {p['std']:.4f} |")
    atomic_write_text(RESULTS / "lr_selection.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache" / "mdl_tf" / "lr_selection")
