"""`mdl-tf bench onboarding`: how well, how fast and at what cost to the old scenarios a new scenario is learned.

Protocol (issue 18, "Measure it"). One scenario is held out of training entirely: synthetic `search` (the generator's
`live` surface only appears in 3% of the test split, far fewer rows than 20k; `search` is the scenario whose click
function differs most from the others), MovieLens-1M (random protocol) `under25`. Rows whose membership includes
the held-out scenario are removed from the base models' training and eval rows. The base MDL and the base baseline
(STAR by default) train on the rest. Then, for each N in --rows-list, N train rows of the held-out scenario (a fixed
random order, so the 1k rows are inside the 5k rows) onboard it by four routes:

(a) fallback  the base MDL as is: the new scenario's rows have an all-zero scenario mask and are served by the global
              token alone (no training; one record, rows 0);
(b) token     `mdl-tf scenario add`'s logic (`mdl_tf.training.onboarding.make_onboarded` + `_train_token`): one new
              scenario token, initialised from the global token, is the only trainable weight;
(c) full      the same new token (initialised from the global token, so the model starts as (a)), then every weight
              of the base and the token trainable, trained on the N new rows plus `replay` x N rows sampled from
              the base's training rows (old scenarios), with the same optimizers, learning rates and epochs;
(d) baseline  the baseline's own route: the baseline rebuilt with one more scenario, every weight copied from the
              trained baseline, each scenario-indexed weight (one axis = number of scenarios: STAR's per-scenario
              star weights W_k / b_k, partitioned-norm gamma_k / beta_k and moving statistics, and the scenario
              embedding e_scn of every baseline that reads it; PEPNet: e_scn only; RankMixer has none, and HMoE's
              towers are indexed by scenario × task: both are refused, `route_d_refusal`) grows one slice
              initialised to the mean of the old ones, and only that new slice trains on the N new rows. Sub-layers
              without a scenario-indexed weight are frozen (not trainable); in the layers
              that have one, every other value (shared W, b, gamma, beta and the old scenarios' slices) is put back
              after each step (`RestoreFrozen`), which with RMSprop/Adagrad (element-wise updates, no momentum) is
              exactly a zero update on them. The baseline is sized to the base MDL's dense-parameter count.

Reported per run: AUC (and log loss) per task on the held-out scenario's eval rows; AUC per task on the old
scenarios' eval rows and its change against the method's base model (the base MDL for a-c, the base baseline for d;
for (b) the old rows' probabilities must be bit-identical to the base's, asserted, so the change is exactly 0);
training seconds (the fit) and wall seconds (loading the base model, training, scoring; the base models are trained
once, cached, and not counted). Each run appends one fsync'd line to `<out>/runs.jsonl` under a key holding a fingerprint
of the settings; a re-run skips finished keys (`--max-minutes` stops between runs), base models are cached in
`--cache`, and results.json / results.md / results.png are rebuilt after every run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import time
from pathlib import Path

import numpy as np

from mdl_tf.bench.machine import machine_info
from mdl_tf.bench.movielens1m import append_run, model_defaults, read_runs

DATASETS = ("synthetic", "movielens1m")
METHODS = ("fallback", "token", "full", "baseline")
LABELS = {"fallback": "(a) global-token fallback", "token": "(b) token-only onboarding",
          "full": "(c) full fine-tuning (old + new rows)", "baseline": "(d) baseline: its scenario-specific parts"}
HELD_OUT = {"synthetic": "search", "movielens1m": "under25"}
VERSION = 1  # bump when a change outside Settings changes results


@dataclasses.dataclass
class Settings:
    """Everything that decides a run's result besides the method and N (hashed into the run keys)."""
    dataset: str = "synthetic"
    synthetic_rows: int = 200_000     # generator rows (synthetic only); ~11% are train rows of `search`
    base_rows: int | None = None      # cap on the base models' training rows (a random sample); None = all
    base_epochs: int = 3
    base_batch_size: int = 512
    baseline: str = "star"
    epochs: int = 2                   # onboarding epochs, every method
    batch_size: int = 256
    dense_lr: float = 1e-3            # every onboarding method (scenario add's defaults)
    sparse_lr: float = 0.05
    replay: float = 1.0               # (c): old-scenario rows per new row
    seed: int = 0

    def fingerprint(self) -> str:
        """Hash of the settings and of the constructor defaults of MDL and the baseline: a changed default retrains
        the cached base models and re-runs every method."""
        defaults = {m: model_defaults(m) for m in ("mdl", self.baseline)}
        blob = json.dumps({**dataclasses.asdict(self), "version": VERSION, "defaults": defaults}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


# -- data ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Split:
    """The held-out protocol's frames and configs. cfg lists the held-out scenario last; base_cfg lacks it."""
    cfg: object
    base_cfg: object
    held_out: str
    base_train: object   # old-scenario train rows (what the base models train on)
    base_eval: object    # old-scenario eval rows (early stopping, and the old-scenario AUC)
    new_train: object    # held-out scenario train rows, in a fixed random order (the first N onboard it)
    new_eval: object     # held-out scenario eval rows (the reported AUC)


def _member(frame, cfg, name: str) -> np.ndarray:
    """Boolean [N]: rows whose scenario (or membership cell) includes `name`."""
    sc = cfg.scenario
    if sc.membership_column:
        cells = frame[sc.membership_column].fillna("").astype(str)
        listed = cells.map(lambda c: name in c.split(sc.separator)).to_numpy()
        return np.where(cells.to_numpy() == "", frame[sc.column].astype(str).to_numpy() == name, listed)
    return frame[sc.column].astype(str).to_numpy() == name


def _with_values(cfg, values: list):
    from mdl_tf import config as cfgmod

    raw = cfg.to_dict()
    raw["scenario"] = {**raw["scenario"], "values": list(values)}
    return cfgmod.from_dict(raw, "onboarding benchmark config")


def load_split(s: Settings, cache) -> Split:
    """Read (or generate) the dataset of `s` and split it into the held-out protocol's frames."""
    held_out = HELD_OUT[s.dataset]
    if s.dataset == "synthetic":
        from mdl_tf.data import synthetic

        cfg = synthetic.feature_config()
        frame = synthetic.generate(rows=s.synthetic_rows, seed=s.seed).frame
        frames = {k: frame[frame["split"] == k].drop(columns="split").reset_index(drop=True) for k in ("train", "eval")}
    else:
        from mdl_tf.bench.movielens1m import Data

        data = Data("random", cache)
        cfg, frames = data.cfg, {k: data.frames[k] for k in ("train", "eval")}
    old = [v for v in cfg.scenario_names if v != held_out]
    cfg = _with_values(cfg, [*old, held_out])
    base_cfg = _with_values(cfg, old)
    rng = np.random.default_rng(s.seed)
    train_new, eval_new = _member(frames["train"], cfg, held_out), _member(frames["eval"], cfg, held_out)
    base_train = frames["train"][~train_new].reset_index(drop=True)
    if s.base_rows is not None and s.base_rows < len(base_train):
        base_train = base_train.iloc[np.sort(rng.choice(len(base_train), s.base_rows, replace=False))]
        base_train = base_train.reset_index(drop=True)
    new_train = frames["train"][train_new].reset_index(drop=True)
    new_train = new_train.iloc[rng.permutation(len(new_train))].reset_index(drop=True)
    return Split(cfg, base_cfg, held_out, base_train, frames["eval"][~eval_new].reset_index(drop=True), new_train,
                 frames["eval"][eval_new].reset_index(drop=True))


# -- base models -----------------------------------------------------------------------------------------------------
def base_model_dir(s: Settings, split: Split, cache, model: str, dense_params: int | None = None) -> Path:
    """Train `model` on the old scenarios (once; cached under `cache` by the settings' fingerprint) and return its
    `mdl-tf train` output folder (saved_model/, transform.json, train_config.json, metrics.json)."""
    from mdl_tf import config as cfgmod
    from mdl_tf.training.trainer import TrainConfig, train

    root = Path(cache) / f"onboarding-{s.dataset}-{s.fingerprint()}"
    out = root / f"base-{model}"
    if (out / "metrics.json").exists() and (out / "saved_model" / "saved_model.pb").exists():
        return out
    schema = root / "schema"
    cfgmod.dump(split.base_cfg, schema / "features.yaml")
    print(f"bench onboarding: training the base {model} on {len(split.base_train)} old-scenario rows "
          f"({s.base_epochs} epochs)", flush=True)
    tc = TrainConfig(model=model, epochs=s.base_epochs, batch_size=s.base_batch_size, seed=s.seed,
                     early_stopping_patience=1, dense_params=dense_params, verbose=0)
    tmp = root / f".base-{model}-tmp"
    train(schema, schema, tmp, tc, frames={"train": split.base_train, "eval": split.base_eval})
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def restore_model(model_dir, cfg, precision: str = "float32", restore: bool = True):
    """Rebuild a trained model (any registry model) from its SavedModel's metadata with `cfg` and restore its
    weights (`restore` False: build only, for a cfg with more scenarios). Returns (model, metadata)."""
    from mdl_tf.export import METADATA_FILE, rebuild_model
    from mdl_tf.models import build_model

    path = Path(model_dir) / "saved_model"
    meta = json.loads((path / "assets.extra" / METADATA_FILE).read_text())
    model, _ = rebuild_model(path, meta, lambda hp: build_model(meta["model"], cfg, meta["vocab_sizes"],
                                                                 precision=precision, **hp), restore=restore)
    return model, meta


# -- metrics ---------------------------------------------------------------------------------------------------------
def _auc_table(frame, cfg, probs: np.ndarray) -> dict:
    """{task: {"auc", "logloss", "count", "positive_rate"}} of probabilities [N, N_t] on `frame`'s labelled rows."""
    from mdl_tf.training.onboarding import _metrics

    return _metrics(frame, cfg, {t: probs[:, i] for i, t in enumerate(cfg.task_names)}, cfg.task_names)


def _aucs(table: dict) -> dict:
    return {t: m["auc"] for t, m in table.items()}


def _delta(after: dict, before: dict) -> dict:
    return {t: (None if after[t] is None or before[t] is None else after[t] - before[t]) for t in after}


# -- the four routes -------------------------------------------------------------------------------------------------
def _onboard_config(s: Settings):
    from mdl_tf.training.onboarding import OnboardConfig

    return OnboardConfig(epochs=s.epochs, batch_size=s.batch_size, dense_lr=s.dense_lr, sparse_lr=s.sparse_lr,
                         seed=s.seed)


def _fit(model, frame, cfg, transform, s: Settings, callbacks=()) -> float:
    """Fit `model`'s trainable weights on `frame` (every task); returns the seconds."""
    from mdl_tf.training.data import make_dataset

    model.compile(dense_lr=s.dense_lr, sparse_lr=s.sparse_lr)
    ds = make_dataset(frame, cfg, transform, s.batch_size, shuffle=True, seed=s.seed)
    started = time.time()
    model.fit(ds, epochs=s.epochs, verbose=0, callbacks=list(callbacks))
    return time.time() - started


def run_mdl(method: str, s: Settings, split: Split, base_dir, rows: int) -> dict:
    """(a) fallback, (b) token or (c) full on the first `rows` new-scenario rows: probabilities on the new and the
    old eval rows, the base's old-eval probabilities, train seconds, trainable weights."""
    import pandas as pd
    import tensorflow as tf

    from mdl_tf.data.transform import FeatureTransform
    from mdl_tf.training.onboarding import _train_token, load_trained, make_onboarded
    from mdl_tf.training.trainer import predict_frame

    tf.keras.utils.set_random_seed(s.seed)
    trained = load_trained(base_dir)
    base, stats = trained.model, trained.stats
    base_tf = FeatureTransform(split.base_cfg, stats)
    out = {"base_old": predict_frame(base, split.base_eval, split.base_cfg, base_tf), "train_seconds": 0.0,
           "trainable_params": 0}
    if method == "fallback":  # the base as is: the new rows' scenario mask is all zero (global token only)
        out["new"], out["old"] = predict_frame(base, split.new_eval, split.base_cfg, base_tf), out["base_old"]
        return out
    cfg, transform = split.cfg, FeatureTransform(split.cfg, stats)
    model = make_onboarded(cfg, base, [{"kind": "scenario", "name": split.held_out, "init_from": "global"}])
    new_rows = split.new_train.iloc[:rows]
    if method == "token":  # `mdl-tf scenario add`'s training step, unchanged
        report = _train_token(model, new_rows, cfg, transform, _onboard_config(s), list(range(cfg.num_tasks)))
        out["train_seconds"], out["trainable_params"] = report["seconds"], report["trainable_params"]
    elif method == "full":  # onboard the token, then unfreeze everything and train on old + new rows
        model.base.trainable = True
        for token in model.appended:
            token.trainable = True
        rng = np.random.default_rng(s.seed + 1)
        replay = split.base_train.iloc[rng.choice(len(split.base_train), min(len(split.base_train),
                                                                             int(round(s.replay * rows))),
                                                  replace=False)]
        frame = pd.concat([new_rows, replay], ignore_index=True)
        out["train_seconds"] = _fit(model, frame, cfg, transform, s)
        out["trainable_params"] = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    else:
        raise ValueError(f"unknown MDL method {method!r}")
    out["new"] = predict_frame(model, split.new_eval, cfg, transform)
    out["old"] = predict_frame(model, split.base_eval, cfg, transform)
    return out


def grow_scenarios(old, new, k: int) -> list:
    """Copy every weight of `old` (built with k scenarios) into `new` (the same model with k + 1). A weight that
    differs in one axis only, k in `old` and k + 1 in `new`, is scenario-indexed along that axis (the leading one for
    STAR's and PEPNet's per-scenario weights, the second for HMoE's gate kernel [d, k, experts]): the k old slices are
    copied and slice k is their mean. Returns [(weight of `new`, its scenario axis)]. Raises ValueError on any other
    shape difference."""
    a, b = old.model_weights(), new.model_weights()
    if len(a) != len(b):
        raise ValueError(f"the grown model has {len(b)} weights, the trained one {len(a)}")
    grown = []
    for va, vb in zip(a, b):
        if va.shape == vb.shape:
            vb.assign(va)
            continue
        differ = [i for i, (m, n) in enumerate(zip(va.shape, vb.shape)) if m != n]
        one_axis = len(va.shape) == len(vb.shape) and len(differ) == 1
        if not (one_axis and (va.shape[differ[0]], vb.shape[differ[0]]) == (k, k + 1)):
            raise ValueError(f"{va.name}: shape {va.shape} -> {vb.shape} is not a scenario-indexed weight")
        axis, x = differ[0], va.numpy()
        vb.assign(np.concatenate([x, x.mean(axis=axis, keepdims=True)], axis=axis).astype(x.dtype))
        grown.append((vb, axis))
    return grown


def _old_slices(axis: int, k: int) -> tuple:
    """The index of the k old scenarios' slices of a weight scenario-indexed along `axis`."""
    return (slice(None),) * axis + (slice(0, k),)


def _restore_frozen_class():
    import tensorflow as tf

    class RestoreFrozen(tf.keras.callbacks.Callback):
        """After every training step, put back every value of `variables` except slice `k` (along their scenario
        axis) of the `grown` ones ([(weight, axis)]): with element-wise optimizers and no momentum, the same as never
        updating them."""

        def __init__(self, variables, grown, k: int):
            super().__init__()
            axis_of = {v.ref(): axis for v, axis in grown}
            self.saved = [(v, v.numpy(), None if v.ref() not in axis_of else _old_slices(axis_of[v.ref()], k))
                          for v in variables]

        def on_train_batch_end(self, batch, logs=None):
            for v, value, old in self.saved:
                if old is None:
                    v.assign(value)
                else:
                    x = v.numpy()
                    x[old] = value[old]
                    v.assign(x)

    return RestoreFrozen


def run_baseline(s: Settings, split: Split, base_dir, rows: int) -> dict:
    """(d): the baseline grown by one scenario, only the new scenario's rows of its scenario-indexed weights trained
    on the first `rows` new-scenario rows (module docstring)."""
    import tensorflow as tf

    from mdl_tf.data.transform import FeatureTransform
    from mdl_tf.training.onboarding import _read_json
    from mdl_tf.training.trainer import predict_frame

    tf.keras.utils.set_random_seed(s.seed)
    stats = _read_json(Path(base_dir) / "transform.json", "transform statistics")
    old, _ = restore_model(base_dir, split.base_cfg)
    old_pred = predict_frame(old, split.base_eval, split.base_cfg, FeatureTransform(split.base_cfg, stats))
    k = split.base_cfg.num_scenarios
    model, _ = restore_model(base_dir, split.cfg, restore=False)  # grow_scenarios sets its weights
    grown = grow_scenarios(old, model, k)
    grown_refs = {v.ref() for v, _ in grown}
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if not any(v.ref() in grown_refs for v in layer.weights):
            layer.trainable = False
    kept = [v for v in model.model_weights()]  # trainable or updated in training (moving statistics)
    transform = FeatureTransform(split.cfg, stats)
    seconds = _fit(model, split.new_train.iloc[:rows], split.cfg, transform, s,
                   callbacks=[_restore_frozen_class()(kept, grown, k)])
    return {"base_old": old_pred, "new": predict_frame(model, split.new_eval, split.cfg, transform),
            "old": predict_frame(model, split.base_eval, split.cfg, transform), "train_seconds": seconds,
            "trainable_params": int(sum(int(np.prod(v.shape)) // int(v.shape[axis]) for v, axis in grown)),
            "scenario_weights": sorted(v.name for v, _ in grown)}


# -- running ---------------------------------------------------------------------------------------------------------
def run_key(s: Settings, method: str, rows: int) -> str:
    return f"{s.dataset}/{method}/rows{rows}/s{s.seed}/{s.fingerprint()}"


def plan(s: Settings, rows_list, runs: dict) -> list:
    """(method, rows) still to run: the fallback once, then per N token, full and baseline."""
    todo = [("fallback", 0)] + [(m, n) for n in rows_list for m in METHODS[1:]]
    return [(m, n) for m, n in todo if run_key(s, m, n) not in runs]


def run_one(s: Settings, split: Split, cache, method: str, rows: int, command: str) -> dict:
    """One (method, rows) run: train, score, assert (b)'s old outputs are bit-identical; returns its record."""
    import tensorflow as tf

    mdl_dir = base_model_dir(s, split, cache, "mdl")  # trained once and cached: not part of any method's time
    if method == "baseline":
        mdl_dense = json.loads((mdl_dir / "metrics.json").read_text())["params"]["dense"]
        base_dir = base_model_dir(s, split, cache, s.baseline, dense_params=mdl_dense)
    started = time.time()
    if method == "baseline":
        result = run_baseline(s, split, base_dir, rows)
    else:
        result = run_mdl(method, s, split, mdl_dir, rows)
    if method in ("fallback", "token") and not np.array_equal(result["old"], result["base_old"]):
        diff = float(np.max(np.abs(result["old"] - result["base_old"])))
        raise RuntimeError(f"{method}: the old scenarios' probabilities changed (max |diff| {diff:g}); onboarding "
                           f"must leave them bit-identical")
    new, old = _auc_table(split.new_eval, split.cfg, result["new"]), _auc_table(split.base_eval, split.base_cfg,
                                                                                  result["old"])
    base_old = _aucs(_auc_table(split.base_eval, split.base_cfg, result["base_old"]))
    record = {"key": run_key(s, method, rows), "dataset": s.dataset, "method": method, "rows": rows,
              "rows_used": int(min(rows, len(split.new_train))), "held_out": split.held_out,
              "model": s.baseline if method == "baseline" else "mdl",
              "new_eval_rows": int(len(split.new_eval)), "old_eval_rows": int(len(split.base_eval)),
              "new": new, "old_auc": _aucs(old), "old_auc_base": base_old, "old_auc_change": _delta(_aucs(old), base_old),
              "old_bit_identical": bool(np.array_equal(result["old"], result["base_old"])),
              "train_seconds": round(float(result["train_seconds"]), 2),
              "trainable_params": int(result["trainable_params"]),
              "scenario_weights": result.get("scenario_weights"), "settings": dataclasses.asdict(s),
              "machine": machine_info(), "command": command, "wall_seconds": None,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if method == "token" and any(v != 0.0 for v in record["old_auc_change"].values() if v is not None):
        raise RuntimeError(f"token: old-scenario AUC changed by {record['old_auc_change']}")
    record["wall_seconds"] = round(time.time() - started, 1)
    tf.keras.backend.clear_session()
    return record


def command_of(s: Settings, rows_list, out, cache) -> str:
    """The `mdl-tf bench onboarding` command line that reproduces these settings (recorded with every figure)."""
    d = Settings(dataset=s.dataset)
    flags = {"--dataset": s.dataset, "--rows-list": ",".join(map(str, rows_list))}
    for field, flag in (("synthetic_rows", "--synthetic-rows"), ("base_rows", "--base-rows"),
                        ("base_epochs", "--base-epochs"), ("baseline", "--baseline"), ("epochs", "--epochs"),
                        ("batch_size", "--batch-size"), ("replay", "--replay"), ("seed", "--seed")):
        if getattr(s, field) != getattr(d, field):
            flags[flag] = getattr(s, field)
    flags.update({"--out": out, "--cache": cache})
    return "mdl-tf bench onboarding " + " ".join(f"{k} {shlex.quote(str(v))}" for k, v in flags.items())


def run(out_dir, cache, s: Settings, rows_list, max_minutes: float | None = None, command: str | None = None) -> dict:
    """Run what is left (resumable), rebuilding the summary after every run. Returns the summary."""
    out = Path(out_dir)
    log = out / "runs.jsonl"
    command = command or command_of(s, rows_list, out, cache)
    started, split = time.time(), None
    while True:
        runs = read_runs(log)
        todo = plan(s, rows_list, runs)
        if not todo:
            break
        if max_minutes is not None and time.time() - started > 60 * max_minutes:
            print(f"bench onboarding: stopping after {max_minutes} min; {len(todo)} runs left (re-run to continue)",
                  flush=True)
            break
        method, rows = todo[0]
        split = split or load_split(s, cache)
        print(f"bench onboarding: {len(runs)} done, next {method} with {rows} rows of {split.held_out} "
              f"({len(todo)} queued)", flush=True)
        record = run_one(s, split, cache, method, rows, command)
        append_run(log, record)
        aucs = ", ".join(f"{t} {m['auc']:.4f}" for t, m in record["new"].items() if m["auc"] is not None)
        print(f"bench onboarding: {method} rows {rows}: new-scenario AUC {aucs}; old change "
              f"{record['old_auc_change']} ({record['wall_seconds']:.0f} s)", flush=True)
        write_summary(out, read_runs(log), s, rows_list)
    return write_summary(out, read_runs(log), s, rows_list)


# -- summary ---------------------------------------------------------------------------------------------------------
def summarise(runs: dict, s: Settings, rows_list) -> dict:
    """The records of the current settings as a table: {method: {rows: record}} plus machine and command."""
    table: dict = {}
    for m, n in [("fallback", 0)] + [(m, n) for n in rows_list for m in METHODS[1:]]:
        rec = runs.get(run_key(s, m, n))
        if rec is not None:
            table.setdefault(m, {})[str(n)] = {k: rec[k] for k in (
                "rows_used", "model", "new", "old_auc", "old_auc_base", "old_auc_change", "old_bit_identical",
                "train_seconds", "wall_seconds", "trainable_params", "new_eval_rows", "old_eval_rows")}
    done = [r for r in runs.values() if r["key"].endswith(s.fingerprint())]
    last = max(done, key=lambda r: r["finished"]) if done else None
    return {"dataset": s.dataset, "held_out": HELD_OUT[s.dataset], "settings": dataclasses.asdict(s),
            "rows_list": list(rows_list), "runs_done": len(done), "methods": table, "labels": LABELS,
            "machine": last["machine"] if last else machine_info(), "command": last["command"] if last else None}


def _fmt(x, signed=False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def markdown(summary: dict) -> str:
    tasks = sorted({t for m in summary["methods"].values() for r in m.values() for t in r["new"]})
    lines = [f"# Onboarding a held-out scenario: {summary['dataset']} (`{summary['held_out']}`)", "",
             f"Command: `{summary['command']}`  ", f"Machine: {json.dumps(summary['machine'])}  ",
             f"Settings: `{json.dumps(summary['settings'])}`", "",
             "AUC on the held-out scenario's eval rows, change of AUC on the old scenarios' eval rows (against the "
             "method's own base model), training and wall seconds. (a) serves the new rows with the base MDL's "
             "global token; (b) trains one new scenario token only; (c) trains every weight on the new rows plus "
             f"{summary['settings']['replay']}x as many old rows; (d) grows {summary['settings']['baseline']}'s "
             "scenario-indexed weights by one scenario and trains that row only.", "",
             "| method | new rows | " + " | ".join(f"AUC {t} (new)" for t in tasks) + " | "
             + " | ".join(f"ΔAUC {t} (old)" for t in tasks) + " | old bit-identical | train s | wall s |",
             "|---|---:|" + "---:|" * (2 * len(tasks)) + "---|---:|---:|"]
    for m in METHODS:
        for n, r in summary["methods"].get(m, {}).items():
            lines.append(f"| {LABELS[m]}{' (' + r['model'] + ')' if m == 'baseline' else ''} | {r['rows_used']} | "
                         + " | ".join(_fmt(r["new"][t]["auc"]) for t in tasks) + " | "
                         + " | ".join(_fmt(r["old_auc_change"][t], True) for t in tasks)
                         + f" | {'yes' if r['old_bit_identical'] else 'no'} | {r['train_seconds']:.1f} | "
                         f"{r['wall_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """AUC on the new scenario vs onboarding rows, one line per method, one panel per task (atomic write)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for m in summary["methods"].values() for r in m.values() for t in r["new"]})
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.5 * max(1, len(tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for m in METHODS:
            recs = summary["methods"].get(m, {})
            if m == "fallback" and "0" in recs:
                ax.axhline(recs["0"]["new"][task]["auc"], ls="--", color="gray", label=LABELS[m])
            elif recs:
                pts = sorted((r["rows_used"], r["new"][task]["auc"]) for r in recs.values()
                             if r["new"][task]["auc"] is not None)
                label = LABELS[m] + (f" ({summary['settings']['baseline']})" if m == "baseline" else "")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel(f"rows of the held-out scenario '{summary['held_out']}'")
        ax.set_ylabel(f"AUC {task} (held-out scenario, eval)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    m = summary["machine"]
    fig.suptitle(f"onboarding {summary['dataset']}: {summary['command']}\n{m.get('processor')}, {m.get('cpus')} cpus, "
                 f"TF {m.get('tensorflow')}", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_summary(out: Path, runs: dict, s: Settings, rows_list) -> dict:
    from mdl_tf.utils import atomic_write_text, write_json

    summary = summarise(runs, s, rows_list)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", summary)
    atomic_write_text(out / "results.md", markdown(summary))
    if summary["methods"]:
        plot(summary, out / "results.png")
    return summary


__all__ = ["DATASETS", "METHODS", "Settings", "grow_scenarios", "load_split", "plan", "run", "run_key"]
