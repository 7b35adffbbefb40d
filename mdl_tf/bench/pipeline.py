"""`mdl-tf bench pipeline`: wall time of the local TFX pipeline, per component, as the data grows.

For each row count and id mode: synthetic data of that size, one uncached `mdl-tf pipeline run` (DirectRunner) with
a fixed number of training steps (so the Trainer's figure is per step, not per row), and every component's wall time
read from ML Metadata. The id mode (`--ids`) sets how the synthetic id features (user_id, item_id and the item
history) are encoded: `vocabulary` (a TF Transform vocabulary each, computed over the training rows) or `hashed`
(`hash_buckets`, no vocabulary: issue 19), so the two Transform times are measured side by side. Writes
`<out>/pipeline.json`, `pipeline.md` and `pipeline.png`; a run is merged into an existing pipeline.json of the same
settings (one entry per rows x ids, the newest kept), so sizes can be measured in separate sittings.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from mdl_tf import config as cfgmod
from mdl_tf.bench.machine import machine_info
from mdl_tf.data import synthetic
from mdl_tf.utils import atomic_write_text, write_json

log = logging.getLogger(__name__)

DEFAULT_ROWS = (10_000, 100_000, 1_000_000)
ID_MODES = ("vocabulary", "hashed")
ID_FEATURES = ("user_id", "item_id", "hist_items")  # hist_items shares item_id's table
# Runs recorded before --ids existed (2026-11-23) predate every hashed feature: all their ids had vocabularies.
LEGACY_IDS, LEGACY_MEASURED = "vocabulary", "2026-11-23"


def id_config(ids: str, rows: int) -> cfgmod.FeatureConfig:
    """The synthetic feature config with every id feature in ID_FEATURES encoded as `ids` says. (Neither mode is the
    shipped synthetic config, which hashes item_id and its history into 4,096 buckets and keeps user_id's vocabulary:
    the bench compares all ids one way against all the other.)

    "vocabulary": no `hash_buckets` anywhere (user_id keeps its min_frequency 2); "hashed": each id feature hashed
    into the power of two at least twice its id count at `rows` (users rows/25, items rows/50: the generator's
    counts), so collisions stay rare and the hashed model is comparable; user_id loses min_frequency, which needs a
    vocabulary. Raises ValueError for an unknown mode."""
    if ids not in ID_MODES:
        raise ValueError(f"ids must be one of {ID_MODES}, got {ids!r}")
    raw = synthetic.FEATURES_YAML
    users, items = synthetic.entity_counts(rows)
    counts = {"user_id": users, "item_id": items, "hist_items": items}
    features = []
    for f in raw["features"]:
        f = dict(f)
        if f["name"] in ID_FEATURES:
            f.pop("hash_buckets", None)
            if ids == "hashed":
                f.pop("min_frequency", None)
                f["hash_buckets"] = 1 << (2 * counts[f["name"]] - 1).bit_length()
        features.append(f)
    return cfgmod.from_dict({**raw, "features": features}, f"synthetic ({ids} ids)")


def _key(run: dict) -> tuple:
    return run["rows"], run.get("ids", LEGACY_IDS)


def _order(run: dict) -> tuple:
    ids = _key(run)[1]
    return ID_MODES.index(ids) if ids in ID_MODES else len(ID_MODES), str(ids), run["rows"]


def comparable(previous: dict, result: dict) -> bool:
    """Whether runs recorded in `previous` (a pipeline.json) were timed under `result`'s settings: the same training
    steps, Beam workers, model width and CPU count (files from before these keys existed ran 1 worker at d=32)."""
    return (previous.get("train_steps") == result["train_steps"] and previous.get("workers", 1) == result["workers"]
            and previous.get("d_model", 32) == result["d_model"]
            and previous.get("machine", {}).get("cpus") == result["machine"]["cpus"])


def _merge(previous: dict, result: dict) -> dict:
    """`result` with the runs of `previous` it did not redo (previous must be `comparable`); sorted by ids, rows."""
    done = {_key(r) for r in result["runs"]}
    runs = [{"command": previous.get("command"), **r} for r in previous.get("runs", []) if _key(r) not in done]
    runs += result["runs"]
    return {**result, "runs": sorted(runs, key=_order)}


def run_pipeline_bench(out_dir, rows=DEFAULT_ROWS, train_steps: int = 200, workers: int = 1,
                       d_model: int = 32, ids=("vocabulary",)) -> dict:
    """Time the pipeline for every (ids, rows) pair; returns the merged result (see the module docstring).
    Raises ValueError for an unknown id mode."""
    from tfx_pipeline import artifacts, local_runner

    for mode in ids:
        id_config(mode, 1)  # an unknown mode fails before any data is written
    command = (f"mdl-tf bench pipeline --rows {','.join(str(n) for n in rows)} --ids {','.join(ids)} "
               f"--train-steps {train_steps} --workers {workers}")
    result = {"machine": machine_info(), "command": command, "train_steps": train_steps, "workers": workers,
              "d_model": d_model, "runs": []}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "pipeline.json").read_text()) if (out / "pipeline.json").exists() else {}
    if previous and not comparable(previous, result):
        keep = out / f"pipeline.replaced-{time.strftime('%Y%m%d-%H%M%S')}.json"
        (out / "pipeline.json").rename(keep)
        log.warning("%s was timed under other settings (%s); moved to %s, this run starts a new table",
                    out / "pipeline.json", previous.get("command"), keep)
        print(f"bench pipeline: earlier results were timed under other settings; kept as {keep}", flush=True)
        previous = {}
    merged = _merge(previous, result)
    for mode, n in tqdm([(m, n) for m in ids for n in rows], desc="pipeline bench", unit="run"):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            started = time.time()
            synthetic.write(work / "data", rows=n, seed=0)
            cfgmod.dump(id_config(mode, n), work / "data" / "features.yaml")
            data_seconds = time.time() - started
            summary = local_runner.run(
                work / "data", work / "data", work / "root", train_steps=train_steps, workers=workers,
                hparams={"d_model": d_model}, train={"epochs": 1, "batch_size": 512}, auc_floor=0.5,
                enable_cache=False)
            result["runs"].append({"rows": n, "ids": mode, "measured": time.strftime("%Y-%m-%d"), "command": command,
                                   "synthetic_data_seconds": round(data_seconds, 1),
                                   "pipeline_seconds": summary["seconds"], "blessed": summary["blessed"],
                                   "components": {k: round(v, 1) for k, v in artifacts.component_seconds(
                                       Path(summary["pipeline_root"])).items()}})
        # Written after every run: a long bench that is stopped keeps the runs it finished.
        merged = _merge(previous, result)
        write_json(out / "pipeline.json", merged)
        atomic_write_text(out / "pipeline.md", markdown(merged))
        plot(merged, out / "pipeline.png")
    return merged


def markdown(result: dict) -> str:
    runs = result["runs"]
    names = list(dict.fromkeys(c for r in runs for c in r["components"]))
    commands = list(dict.fromkeys(r.get("command") or result["command"] for r in runs))
    lines = [f"Wall seconds per component on {result['machine']['cpus']} CPUs; `ids`: how the id features are encoded; "
             f"each column with the day it was measured, from " + " and ".join(f"`{c}`" for c in commands), "",
             "| component | " + " | ".join(f"{r['rows']:,} rows, {_key(r)[1]} ids ({r.get('measured', LEGACY_MEASURED)})"
                                        for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(str(r["components"].get(name, "–")) for r in runs) + " |")
    lines.append("| **whole pipeline** | " + " | ".join(str(r["pipeline_seconds"]) for r in runs) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for mode in ID_MODES:
        runs = [r for r in result["runs"] if _key(r)[1] == mode]
        if not runs:
            continue
        rows = [r["rows"] for r in runs]
        # Every component for the vocabulary runs; for the hashed runs the part that differs: the Transform.
        names = dict.fromkeys(c for r in runs for c in r["components"]) if mode == "vocabulary" else ["Transform"]
        for name in names:
            secs = [r["components"].get(name) for r in runs]
            if all(s is not None and s > 0 for s in secs) and max(secs) >= 1:
                ax.loglog(rows, secs, "o-" if mode == "vocabulary" else "s:", label=f"{name} ({mode} ids)")
        ax.loglog(rows, [r["pipeline_seconds"] for r in runs], "k^--" if mode == "vocabulary" else "kv:",
                  label=f"whole pipeline ({mode} ids)")
    ax.set_xlabel("synthetic rows")
    ax.set_ylabel("wall seconds")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
