"""`mdl-tf bench pipeline`: wall time of the local TFX pipeline, per component, as the data grows.

For each row count: synthetic data of that size, one uncached `mdl-tf pipeline run` (DirectRunner) with a fixed
number of training steps (so the Trainer's figure is per step, not per row), and every component's wall time read
from ML Metadata. Writes `<out>/pipeline.json`, `pipeline.md` and `pipeline.png`.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from mdl_tf.bench.machine import machine_info
from mdl_tf.data import synthetic
from mdl_tf.utils import atomic_write_text, write_json

DEFAULT_ROWS = (10_000, 100_000, 1_000_000)


def run_pipeline_bench(out_dir, rows=DEFAULT_ROWS, train_steps: int = 200, workers: int = 1,
                       d_model: int = 32) -> dict:
    from tfx_pipeline import artifacts, local_runner

    command = (f"mdl-tf bench pipeline --rows {','.join(str(n) for n in rows)} --train-steps {train_steps} "
               f"--workers {workers}")
    result = {"machine": machine_info(), "command": command, "train_steps": train_steps, "runs": []}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for n in tqdm(rows, desc="pipeline bench", unit="size"):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            started = time.time()
            synthetic.write(work / "data", rows=n, seed=0)
            data_seconds = time.time() - started
            summary = local_runner.run(
                work / "data", work / "data", work / "root", train_steps=train_steps, workers=workers,
                hparams={"d_model": d_model}, train={"epochs": 1, "batch_size": 512}, auc_floor=0.5,
                enable_cache=False)
            result["runs"].append({"rows": n, "synthetic_data_seconds": round(data_seconds, 1),
                                   "pipeline_seconds": summary["seconds"], "blessed": summary["blessed"],
                                   "components": {k: round(v, 1) for k, v in artifacts.component_seconds(
                                       Path(summary["pipeline_root"])).items()}})
        # Written after every size: a long run that is stopped keeps the sizes it finished.
        write_json(out / "pipeline.json", result)
        atomic_write_text(out / "pipeline.md", markdown(result))
        plot(result, out / "pipeline.png")
    return result


def markdown(result: dict) -> str:
    runs = result["runs"]
    names = list(dict.fromkeys(c for r in runs for c in r["components"]))
    lines = [f"`{result['command']}` ({result['machine']['cpus']} CPUs; seconds)", "",
             "| component | " + " | ".join(f"{r['rows']:,} rows" for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(str(r["components"].get(name, "–")) for r in runs) + " |")
    lines.append("| **whole pipeline** | " + " | ".join(str(r["pipeline_seconds"]) for r in runs) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    rows = [r["rows"] for r in runs]
    for name in dict.fromkeys(c for r in runs for c in r["components"]):
        secs = [r["components"].get(name) for r in runs]
        if all(s is not None and s > 0 for s in secs) and max(secs) >= 1:
            ax.loglog(rows, secs, "o-", label=name)
    ax.loglog(rows, [r["pipeline_seconds"] for r in runs], "k--", label="whole pipeline")
    ax.set_xlabel("synthetic rows")
    ax.set_ylabel("wall seconds")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
