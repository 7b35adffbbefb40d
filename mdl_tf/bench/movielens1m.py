"""`mdl-tf bench movielens1m`: MDL against the 8 baselines on MovieLens-1M, tuned alike, resumable over sittings.

Protocol (issue 15):
1. `tune` (random protocol): every model trains seed 0 at each point of its tuning grid (`TUNING_GRID` on the model
   class; the same number of trials for every model) and the point with the best mean **eval** AUC over the
   6 scenario x task cells is chosen. Nothing is chosen on test.
2. `final` (random protocol): the chosen point of every model with seeds 0, 1, 2 (seed 0 is the tuning run).
3. `temporal`: the chosen points again on the temporal protocol; 3 seeds for MDL and the two best baselines of
   the random protocol's test table, 1 seed for the others. A model's temporal runs can start as soon as its
   trials have chosen its point; the best baselines' seeds 1 and 2 once every baseline's random seeds are in.

Every model is sized to the same dense-parameter budget (MDL's count at d=64 on that protocol's config, ±5%),
trains at batch 4096 (as published) with early stopping on the eval split (patience 2, cap 8 epochs).

Each finished run appends one JSON line to `<out>/runs.jsonl` (eval and test metrics, per-user bootstrap intervals,
wall time, machine); a re-run skips every run whose key is already there, so the benchmark can be completed over
several sittings. The key holds a fingerprint of the model's defaults and the protocol settings: changing MDL's
defaults re-runs MDL's rows and nothing else. `summarise` turns the lines into quality.json/.md/.png.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import time
from pathlib import Path

import numpy as np

from mdl_tf.bench.machine import machine_info
from mdl_tf.data import movielens1m
from mdl_tf.errors import UserError

BASELINES = ("shared_bottom", "mmoe", "ple", "star", "pepnet", "dffm", "hmoe", "rankmixer")
MODELS = BASELINES + ("mdl",)  # MDL runs last: its defaults are what the next issue changes
SEEDS = (0, 1, 2)
SETTINGS = {"batch_size": 4096, "epochs": 8, "patience": 2, "reference_d_model": 64}
# Bump when a change outside the models' own defaults (the training step, the transform, the data) changes results.
PROTOCOL_VERSION = 1
# Flags added after runs were recorded, with the default that reproduces those runs exactly: while a flag is at that
# default it stays out of the run keys (adding a flag does not throw away finished runs; changing its default, or
# setting it in a trial, still does). Model constructor flags (this benchmark's and `bench quality`'s keys):
NEUTRAL_DEFAULTS = {"imp_tables": "own", "domain_ffn_multiplier": None, "dropout": 0.0, "important_features": None,
                    "feature_tokens": None, "domain_ffn_prenorm": False, "head_input": "task_token",
                    "use_priors": True,  # use_priors: the recorded datasets declare no priors, so True changes nothing
                    # Training flags (TrainConfig.compile_args): only `bench quality`'s keys hash those.
                    "warmup_steps": 0}


def is_neutral(flag: str, value) -> bool:
    """True if `flag` is at its NEUTRAL_DEFAULTS value, so a run key leaves it out."""
    return flag in NEUTRAL_DEFAULTS and value == NEUTRAL_DEFAULTS[flag]


def drop_neutral(args: dict) -> dict:
    """`args` ({flag: value}) less the flags at their NEUTRAL_DEFAULTS value: what a run key may hash."""
    return {k: v for k, v in args.items() if not is_neutral(k, v)}

# Scenario-Wise-Rec (KDD'24 draft, tables 4 and 7): MovieLens-1M, random 80/10/10 split, click task only, test AUC
# overall and per domain (d0 = ages 1/18 = under25, d1 = 25 = 25to34, d2 = 35+ = 35plus).
ANCHORS = {
    "shared_bottom": {"published": "SharedBottom", "overall": 0.8095, "under25": 0.8116, "25to34": 0.8128,
                      "35plus": 0.8041},
    "mmoe": {"published": "MMoE", "overall": 0.8086, "under25": 0.8029, "25to34": 0.8178, "35plus": 0.8016},
    "ple": {"published": "PLE", "overall": 0.8091, "under25": 0.8118, "25to34": 0.8187, "35plus": 0.8002},
    "star": {"published": "STAR", "overall": 0.8096, "under25": 0.8137, "25to34": 0.8133, "35plus": 0.7979},
    "pepnet": {"published": "EPNet / PPNet", "overall": (0.8097, 0.8063)},
}
BEST_PUBLISHED = {"model": "M2M", "overall": 0.8115}
ANCHOR_TOLERANCE = 0.01


def tuning_grid(model: str) -> list:
    """The trials of `model`: every combination of its class's TUNING_GRID, as {knob: value} dicts."""
    from mdl_tf.models import REGISTRY

    grid = REGISTRY[model].TUNING_GRID
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


# What a trial or probe may set on the training side (TrainConfig); everything else goes to the model constructor.
TRAIN_KEYS = ("dense_lr", "sparse_lr", "oov_rate", "weight_decay", "warmup_steps")
# What a probe may set on the data side: `priors=true` trains on the protocol's dataset with the item priors
# (`mdl-tf data movielens --size 1m --priors`), same split and rows.
DATA_KEYS = ("priors",)


def split_trial(trial: dict) -> tuple:
    """(TrainConfig overrides, model hparams) of a trial: learning rates and the OOV id rate go to training, the data
    keys to `Data`, the rest to the model."""
    return ({k: v for k, v in trial.items() if k in TRAIN_KEYS},
            {k: v for k, v in trial.items() if k not in TRAIN_KEYS and k not in DATA_KEYS})


def _init_params(model: str):
    """(class name, parameter) of `model`'s constructors: what `model_defaults` fingerprints (signature defaults
    only, not a baseline's `extra_hparams`, so the recorded keys stay as they are)."""
    from mdl_tf.models import constructor_params

    return constructor_params(model)


def trial_keys(model: str) -> set:
    """What a trial (or a probe) may set for `model`: TRAIN_KEYS, DATA_KEYS and its constructor's flags."""
    from mdl_tf.models import hparam_names

    return hparam_names(model) | set(TRAIN_KEYS) | set(DATA_KEYS)


def model_defaults(model: str) -> dict:
    """{"Class.flag": repr(default)} of `model`'s constructor flags, less those at their NEUTRAL_DEFAULTS value, and
    {"revision": n} once the model class's `revision` is above 1 (so the keys of unrevised models stay as they were)."""
    from mdl_tf.models import REGISTRY

    out = {f"{owner}.{p.name}": repr(p.default) for owner, p in _init_params(model)
           if p.default is not inspect.Parameter.empty and not is_neutral(p.name, p.default)}
    if REGISTRY[model].revision > 1:
        out["revision"] = REGISTRY[model].revision
    return out


def fingerprint(model: str, protocol: str, trial: dict) -> str:
    """Hash of what decides a run's result besides the seed: model defaults, trial, settings, protocol version."""
    defaults = model_defaults(model)
    body = {"model": model, "protocol": protocol, "trial": trial, "defaults": defaults, "settings": SETTINGS,
            "version": PROTOCOL_VERSION}
    if trial.get("priors") and movielens1m.PRIORS_VERSION > 1:  # the priors' definition is part of the data
        body["priors_version"] = movielens1m.PRIORS_VERSION  # (from version 2: version 1's records predate it)
    blob = json.dumps(body, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def run_key(model: str, protocol: str, trial: dict, seed: int) -> str:
    return f"{protocol}/{model}/{json.dumps(trial, sort_keys=True)}/s{seed}/{fingerprint(model, protocol, trial)}"


def read_runs(path: Path) -> dict:
    """{key: record} of the finished runs in a runs.jsonl (a torn last line from a killed write is skipped)."""
    runs = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            runs[rec["key"]] = rec
    return runs


def append_run(path: Path, record: dict) -> None:
    """Append one line and fsync: a run is recorded whole or not at all (read_runs skips a torn line)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# -- data ------------------------------------------------------------------------------------------------------------
class Data:
    """One protocol's dataset on disk (written once into the cache folder) and its frames in memory; `priors`: the
    variant with the item priors (same split and rows)."""

    def __init__(self, protocol: str, cache: Path, priors: bool = False):
        from mdl_tf import config as cfgmod
        from mdl_tf.data.io import read_split

        self.protocol, self.priors = protocol, bool(priors)
        self.dir = Path(cache) / movielens1m.dataset_name(protocol, self.priors)
        info = self.dir / "dataset.json"
        if not info.exists() or (self.priors and json.loads(info.read_text()).get("priors_version")
                                 != movielens1m.PRIORS_VERSION):
            movielens1m.write(self.dir, protocol=protocol, priors=self.priors)
        self.cfg = cfgmod.load(self.dir)
        self.frames = {s: read_split(self.dir, s, self.cfg) for s in ("train", "eval", "test")}
        self._budget = None

    @property
    def budget(self) -> int:
        """MDL's dense-parameter count at the reference width on this protocol's config."""
        if self._budget is None:
            from mdl_tf.data.transform import fit_stats, vocab_sizes
            from mdl_tf.models.sizing import dense_params

            sizes = vocab_sizes(self.cfg, fit_stats(self.frames["train"], self.cfg))
            self._budget = dense_params("mdl", self.cfg, sizes, d_model=SETTINGS["reference_d_model"])
        return self._budget


# -- metrics ---------------------------------------------------------------------------------------------------------
def user_bootstrap(users, labels, probs, cells: dict, resamples: int = 200, seed: int = 0) -> dict:
    """95% intervals by resampling users with replacement (a user's rows stay together).

    cells {name: bool mask [N]} -> {name: {"auc": [lo, hi], "users": n}} and "gauc": [lo, hi]; labels/probs [N]."""
    from mdl_tf.evaluation import auc

    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(users, return_inverse=True)
    rows_of = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    draws = [np.concatenate([rows_of[u] for u in rng.integers(0, len(uniq), len(uniq))]) for _ in range(resamples)]
    out = {}
    for name, mask in cells.items():
        values = [auc(labels[d][mask[d]], probs[d][mask[d]]) for d in draws]
        values = [v for v in values if v is not None]
        out[name] = {"auc": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values
                     else None, "users": int(len(np.unique(users[mask])))}
    per_user = np.array([auc(labels[r], probs[r]) if len(r) else None for r in rows_of], dtype=object)
    defined = np.array([v is not None for v in per_user])
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(uniq), len(uniq))
        pick = pick[defined[pick]]
        values.append(float(np.mean(per_user[pick].astype(np.float64))))
    out["gauc"] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return out


def _compact(metrics: dict) -> dict:
    """The parts of a metrics.json body the tables need."""
    return {"cells": {f"{s}/{t}": {"auc": m["auc"], "logloss": m["logloss"], "count": m["count"]}
                      for s, cell in metrics["per_scenario"].items() if s != "unseen" for t, m in cell.items()},
            "overall": {t: {"auc": m["auc"], "logloss": m["logloss"]} for t, m in metrics["overall"].items()},
            "gauc": metrics["gauc"], "mean_auc": metrics["mean_scenario_task_auc"]}


def test_intervals(data: Data, probs: np.ndarray) -> dict:
    """Per task: per-user bootstrap intervals of the pooled AUC, each scenario's AUC and GAUC on the test split."""
    from mdl_tf.data.transform import labels_and_mask

    frame, cfg = data.frames["test"], data.cfg
    labels, mask = labels_and_mask(frame, cfg)
    users = frame[cfg.user_column].to_numpy()
    scenario = frame[cfg.scenario.column].to_numpy()
    out = {}
    for i, task in enumerate(cfg.task_names):
        keep = mask[:, i] > 0
        cells = {"pooled": np.ones(int(keep.sum()), bool),
                 **{s: scenario[keep] == s for s in cfg.scenario_names}}
        out[task] = user_bootstrap(users[keep], labels[keep, i], probs[keep, i], cells)
    return out


# -- running ---------------------------------------------------------------------------------------------------------
def train_config(model: str, trial: dict, seed: int, budget: int):
    """(TrainConfig, model hparams) of one run: the benchmark's settings, the trial's training keys, sized to the
    dense `budget` unless the trial sets the width (d_model: a fixed-width probe is trained at that width)."""
    from mdl_tf.training.trainer import TrainConfig

    train_kw, hparams = split_trial(trial)
    tc = TrainConfig(model=model, epochs=SETTINGS["epochs"], batch_size=SETTINGS["batch_size"], seed=seed,
                     early_stopping_patience=SETTINGS["patience"],
                     dense_params=None if "d_model" in hparams else budget, verbose=2,
                     export=False, save_test_predictions=True, **train_kw)
    return tc, hparams


def train_one(data: Data, model: str, trial: dict, seed: int, work: Path) -> dict:
    """Train one (model, trial, seed) on `data`; returns the record appended to runs.jsonl."""
    import tensorflow as tf

    if bool(trial.get("priors", False)) != data.priors:
        raise ValueError(f"trial {trial} needs the dataset {'with' if trial.get('priors') else 'without'} priors; "
                         f"got {data.dir}")

    from mdl_tf.training.trainer import train

    tc, hparams = train_config(model, trial, seed, data.budget)
    started = time.time()
    out = work / f"{data.protocol}-{model}-{fingerprint(model, data.protocol, trial)}-s{seed}"
    metrics = train(data.dir, data.dir, out, tc, hparams, frames=data.frames)
    probs = np.load(out / "test_predictions.npz")["probabilities"]
    record = {"key": run_key(model, data.protocol, trial, seed), "protocol": data.protocol, "model": model,
              "trial": trial, "seed": seed, "hparams": metrics["hparams"], "params": metrics["params"],
              "dense_budget": tc.dense_params, "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"],
              "train_seconds": metrics["train_seconds"], "eval": _compact(metrics), "test": _compact(metrics["test"]),
              "test_intervals": test_intervals(data, probs), "settings": SETTINGS,
              "attention_entropy": metrics.get("attention_entropy"), "diagnostics": metrics.get("diagnostics"),
              "machine": machine_info(), "wall_seconds": None, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    record["wall_seconds"] = round(time.time() - started, 1)
    tf.keras.backend.clear_session()
    return record


def chosen_trial(runs: dict, model: str) -> dict | None:
    """The tuning point with the best mean eval AUC over the 6 cells (random protocol, seed 0), once every point ran."""
    scores = []
    for trial in tuning_grid(model):
        rec = runs.get(run_key(model, "random", trial, 0))
        if rec is None:
            return None
        scores.append((rec["eval"]["mean_auc"], trial))
    return max(scores, key=lambda s: s[0])[1]


def plan(runs: dict, protocols=("random", "temporal"), models=MODELS) -> list:
    """The (protocol, model, trial, seed) runs still to do, in order; later stages appear once earlier ones finish."""
    todo = []
    if "random" in protocols:  # model by model: its trials, then its chosen point's other seeds
        for m in models:
            todo += [("random", m, t, 0) for t in tuning_grid(m)]
            trial = chosen_trial(runs, m)
            if trial is not None:
                todo += [("random", m, trial, s) for s in SEEDS[1:]]
    if "temporal" in protocols:
        # A model's chosen point is fixed once its trials ran, so its temporal seed 0 (and MDL's 3 seeds) can run
        # then; the 2 best baselines' other seeds wait until the random table names them.
        best = best_baselines(runs, 2) or []
        for m in models:
            trial = chosen_trial(runs, m)
            if trial is not None:
                todo += [("temporal", m, trial, s) for s in (SEEDS if m == "mdl" or m in best else SEEDS[:1])]
    return [t for t in todo if run_key(t[1], t[0], t[2], t[3]) not in runs]


def _stands_for(model: str, probe_trial: dict, trial: dict) -> bool:
    """Whether a probe's trial is `trial` under `model`'s current defaults: it sets every key of `trial` to the
    same value, and each extra key only to the model's current default (a flag that has since become the default)."""
    defaults = {p.name: p.default for _, p in _init_params(model) if p.default is not inspect.Parameter.empty}
    if any(k not in probe_trial or probe_trial[k] != v for k, v in trial.items()):
        return False
    # A width a fixed-width probe copied is never "a default": planned runs are sized to the budget.
    return all(k not in TRAIN_KEYS and k not in WIDTH_KEYS and k in defaults and defaults[k] == v
               for k, v in probe_trial.items() if k not in trial)


def adoptable_probes(runs: dict, probes: dict, todo: list, tolerance: float = 1e-6) -> list:
    """(planned run, probe record, evidence) for each planned run a probe already trained.

    When a probe's flag becomes the model's default, the probe at the tuning point *is* that point's run under the
    new default (same data, split, seed and configuration); re-training it costs 15 minutes to reproduce a record.
    A probe stands in for planned run (protocol, model, trial, seed) only when
      - its trial sets `trial`'s keys to the same values and any other key to the model's current default
        (`_stands_for`), same protocol and seed; and
      - the identity is shown on another seed of the same probe (same trial and fingerprint: model defaults of
        its time, settings, protocol version): the tuning run of that point under the new default, trained (not
        itself adopted), reproduced that seed's probe eval mean AUC within `tolerance` (the code paths are the
        same and training deterministic), so nothing else changed between the two.
    `evidence` is {"seed", "probe_eval", "rerun_eval"} of that check."""
    groups = {}  # one probe configuration: its records by seed
    for rec in probes.values():
        fp = rec["key"].rsplit("/", 1)[-1]
        point = (rec["protocol"], rec["model"], json.dumps(rec["trial"], sort_keys=True), fp)
        groups.setdefault(point, {}).setdefault(rec["seed"], rec)
    adopted = []
    for protocol, model, trial, seed in todo:
        for (p_protocol, p_model, p_trial, _), same in groups.items():
            if (p_protocol, p_model) != (protocol, model) or seed not in same \
                    or not _stands_for(model, json.loads(p_trial), trial):
                continue
            evidence = None
            for other, rec in sorted(same.items()):
                rerun = runs.get(run_key(model, protocol, trial, other))
                if other != seed and rerun and "adopted_from" not in rerun \
                        and abs(rerun["eval"]["mean_auc"] - rec["eval"]["mean_auc"]) <= tolerance:
                    evidence = {"seed": other, "probe_eval": rec["eval"]["mean_auc"],
                                "rerun_eval": rerun["eval"]["mean_auc"]}
                    break
            if evidence:
                adopted.append(((protocol, model, trial, seed), same[seed], evidence))
                break
    return adopted


def adopt_probes(out: Path, runs: dict, todo: list) -> int:
    """Append the adoptable probes (see `adoptable_probes`) to runs.jsonl under the planned runs' keys, each with
    `adopted_from` (the probe's key) and `adoption_evidence`; returns how many."""
    adopted = adoptable_probes(runs, read_runs(out / "probes.jsonl"), todo)
    for (protocol, model, trial, seed), probe_rec, evidence in adopted:
        record = {**probe_rec, "key": run_key(model, protocol, trial, seed), "trial": trial,
                  "adopted_from": probe_rec["key"], "adoption_evidence": evidence}
        append_run(out / "runs.jsonl", record)
        print(f"bench movielens1m: adopted probe {probe_rec['key']} as {protocol} {model} {trial} seed {seed} "
              f"(seed {evidence['seed']} re-run under the new default reproduced its probe: eval "
              f"{evidence['rerun_eval']:.6f} vs {evidence['probe_eval']:.6f})", flush=True)
    return len(adopted)


def best_baselines(runs: dict, n: int) -> list | None:
    """The n baselines with the best mean test AUC on the random protocol, once every baseline's seeds are done."""
    means = []
    for m in BASELINES:
        trial = chosen_trial(runs, m)
        recs = [runs.get(run_key(m, "random", trial, s)) for s in SEEDS] if trial else [None]
        if any(r is None for r in recs):
            return None
        means.append((np.mean([r["test"]["mean_auc"] for r in recs]), m))
    return [m for _, m in sorted(means, reverse=True)[:n]]


def run(out_dir, cache_dir, protocols=("random", "temporal"), models=MODELS, max_minutes: float | None = None,
        work_dir=None) -> dict:
    """Run what is left of the plan (resumable), summarising after every run. Returns the summary."""
    import tempfile

    out = Path(out_dir)
    log = out / "runs.jsonl"
    started = time.time()
    data = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir or tmp)
        while True:
            runs = read_runs(log)
            todo = plan(runs, protocols, models)
            if todo and adopt_probes(out, runs, todo):
                continue
            if not todo:
                break
            if max_minutes is not None and time.time() - started > 60 * max_minutes:
                print(f"bench movielens1m: stopping after {max_minutes} min; {len(todo)}+ runs left (re-run to "
                      f"continue)", flush=True)
                break
            protocol, model, trial, seed = todo[0]
            if protocol not in data:
                data[protocol] = Data(protocol, cache_dir)
            print(f"bench movielens1m: {len(runs)} done, next {protocol} {model} {trial} seed {seed} "
                  f"({len(todo)} queued)", flush=True)
            record = train_one(data[protocol], model, trial, seed, work)
            append_run(log, record)
            print(f"bench movielens1m: {protocol} {model} s{seed}: eval {record['eval']['mean_auc']:.4f} test "
                  f"{record['test']['mean_auc']:.4f} ({record['wall_seconds']:.0f} s, best epoch "
                  f"{record['best_epoch']})", flush=True)
            write_summary(out, read_runs(log))
    return write_summary(out, read_runs(log))


# The width knobs a fixed-width probe copies from the tuning run it is compared with.
WIDTH_KEYS = ("d_model", "ffn_multiplier", "hidden")


def fixed_width(runs: dict, model: str, base: dict, protocol: str = "random") -> dict:
    """{knob: value} of the width the tuning run at `base` (seed 0) was sized to, for a probe that must keep it: an
    ablation re-sized to the budget changes two things at once (issue 16: the published ablations were confounded
    by their width). Raises UserError when that run has not been trained yet."""
    reference = runs.get(run_key(model, protocol, base, 0))
    if reference is None:
        raise UserError(f"bench movielens1m: a fixed-width probe of {model} copies the width of its tuning run at "
                        f"{base} (seed 0, {protocol}), which has not run yet; run `mdl-tf bench movielens1m "
                        f"--models {model} --protocols {protocol}` first or drop --probe-fixed-width")
    width = {k: reference["hparams"][k] for k in WIDTH_KEYS if k in reference["hparams"]}
    # Every seed of the point must have been trained at that width, or a probe seed would be compared with a run of
    # another width (a budget that moved between runs re-sizes the knobs).
    others = [run["seed"] for run in runs.values() if run["model"] == model and run["protocol"] == protocol
              and run["trial"] == base and {k: run["hparams"].get(k) for k in width} != width]
    if others:
        raise UserError(f"bench movielens1m: {model}'s tuning runs at {base} were sized to different widths (seed 0: "
                        f"{width}; seeds {sorted(others)} differ), so a fixed width has no single reference; "
                        f"pass the width explicitly (--probe d_model=N --probe ffn_multiplier=K)")
    return width


def probe(out_dir, cache_dir, model: str, overrides: dict, protocol: str = "random", seeds=(0,),
          work_dir=None, keep_width: bool = False) -> list:
    """Design probes (issue 16's loop): `model` at its chosen tuning point (its first grid point while tuning is
    incomplete) with `overrides` (model flags or learning rates), per seed, on `protocol`. Records go to
    `probes.jsonl` beside runs.jsonl (same format, resumable by key); they never enter the tuned tables. Each is
    printed beside the tuning run of the same point and seed, on **eval** (what a default may be decided on).
    With `keep_width` the probe trains at the width its tuning run was sized to (`fixed_width`) instead of being
    re-sized to the dense budget: how ablations are compared (fewer parameters, same width).
    Returns the probe records."""
    import tempfile

    out = Path(out_dir)
    runs = read_runs(out / "runs.jsonl")
    base = chosen_trial(runs, model) or tuning_grid(model)[0]
    trial = {**base, **(fixed_width(runs, model, base, protocol) if keep_width else {}), **overrides}
    log, records, data = out / "probes.jsonl", [], None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            key = run_key(model, protocol, trial, seed)
            record = read_runs(log).get(key)
            if record is None:
                data = data or Data(protocol, cache_dir, priors=trial.get("priors", False))
                print(f"bench movielens1m probe: {protocol} {model} {trial} seed {seed}", flush=True)
                record = train_one(data, model, trial, seed, Path(work_dir or tmp))
                append_run(log, record)
            reference = runs.get(run_key(model, protocol, base, seed))
            versus = (f" (tuning run at {base}: eval {reference['eval']['mean_auc']:.4f})" if reference else
                      " (no tuning run at this point and seed yet)")
            print(f"bench movielens1m probe: {model} {overrides} s{seed}: eval {record['eval']['mean_auc']:.4f}"
                  f"{versus}", flush=True)
            records.append(record)
    write_summary(out, runs)  # probes.md, and quality.md's data-variant tables read probes
    return records


def write_summary(out: Path, runs: dict) -> dict:
    from mdl_tf.bench.movielens1m_report import summarise, write_reports

    probes = read_runs(Path(out) / "probes.jsonl")
    summary = summarise(runs, probes)
    write_reports(out, summary, probes, runs)
    return summary


__all__ = ["ANCHORS", "BASELINES", "MODELS", "SETTINGS", "fixed_width", "plan", "probe", "run", "tuning_grid",
           "user_bootstrap"]
