"""`mdl-tf scenario add` / `mdl-tf task add`: append one scenario or task token to a trained MDL model.

Input: an `mdl-tf train` output folder (or an earlier onboarding's output): saved_model/ (whose
`assets.extra/mdl_metadata.json` holds the feature config, hparams and vocabulary sizes), transform.json,
train_config.json, metrics.json. Output: a new folder of the same layout whose feature config lists the new
scenario (task), written aside and renamed into place, so a failure leaves nothing in OUT.

The new token (`mdl_tf.models.onboarded.AppendedToken`) starts as a copy of the global scenario token (a task: of the
`init_from` task, by default the first) and is the only trainable weight: the base model's layers and earlier tokens
are not trainable, so no optimizer holds slots for them and they keep their exact values (checked after training).
Before anything is written, the old and the new SavedModel score the same rows and every existing output must be
bit-identical (np.array_equal); a difference is a bug and nothing is written.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mdl_tf import config as cfgmod
from mdl_tf.config import with_scenario, with_task  # noqa: F401  (onboarding's names for them)
from mdl_tf.data.io import has_split, read_split, split_files
from mdl_tf.data.transform import SCENARIO_MASK, STATS_FILE, FeatureTransform, save_stats
from mdl_tf.errors import UserError
from mdl_tf.evaluation import task_metrics
from mdl_tf.export import METADATA_FILE, OUTPUT_SUFFIX, export_saved_model, rebuild_model
from mdl_tf.models import build_model
from mdl_tf.models.base import precision_policy
from mdl_tf.models.onboarded import OnboardedMDL, check_onboardable
from mdl_tf.serving.examples import rows_to_examples
from mdl_tf.training.data import make_dataset, transformed_arrays
from mdl_tf.training.onboarding_settings import MIN_SCENARIO_ROWS, MIN_TASK_ROWS, OnboardConfig  # noqa: F401
from mdl_tf.utils import is_uri, write_json

log = logging.getLogger(__name__)

CHECK_ROWS = 512  # rows scored by the old and the new SavedModel for the bit-identity check
MODEL_FILES = ("saved_model", STATS_FILE, "train_config.json")


class OnboardingError(UserError):
    """A bad onboarding request (model folder, name, data or label); printed as one line by the CLI."""


@dataclasses.dataclass
class TrainedModel:
    """A trained model folder read back: the Keras model (weights restored), its config, transform stats and the
    files' contents."""
    model: tf.keras.Model
    cfg: cfgmod.FeatureConfig
    stats: dict
    meta: dict
    train_config: dict
    metrics: dict


# -- reading a model folder -----------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OnboardingError(f"{path}: cannot read the {what} ({e}); --model-dir must be an `mdl-tf train` output "
                              f"folder") from None


def _base_config(cfg: cfgmod.FeatureConfig, onboarding: dict | None) -> cfgmod.FeatureConfig:
    if not onboarding:
        return cfg
    raw = cfg.to_dict()
    raw["scenario"] = {**raw["scenario"], "values": raw["scenario"]["values"][:onboarding["base_scenarios"]]}
    raw["tasks"] = raw["tasks"][:onboarding["base_tasks"]]
    return cfgmod.from_dict(raw, "base feature config")


def make_onboarded(cfg, base, steps: list, precision: str = "float32") -> OnboardedMDL:
    """OnboardedMDL over `base` with one token per step, each initialised from its source token (a scenario: the
    global token, whose ê_spec input is the mean of the scenario rows (global_input="mean_spec") or its own row; a
    task: the step's `init_from` base task)."""
    check_onboardable(base)
    with precision_policy(precision):
        model = OnboardedMDL(cfg, base, steps)
        for step, token in zip(steps, model.appended):
            if step["kind"] == "scenario":
                tok = base.scenario_tokenizer
                rows = tok.spec_embedding.embeddings
                spec = (tf.reduce_mean(rows[:tok.num_domains], axis=0) if tok.global_input == "mean_spec"
                        else rows[tok.num_domains])
                token.build_and_copy(base, tok.num_domains, spec)
            else:
                index = base.cfg.task_names.index(step["init_from"])
                token.build_and_copy(base, index, base.task_tokenizer.spec_embedding.embeddings[index])
        return model.build_with_dummy_batch()


def read_trained(model_dir) -> TrainedModel:
    """Read an `mdl-tf train` (or onboarding) output folder's files, without building the model (`model` None).
    Raises OnboardingError if the folder is not one, or holds a model that is not MDL."""
    path = Path(model_dir)
    if not path.is_dir():
        raise OnboardingError(f"--model-dir {path}: no such folder; give the --out folder of `mdl-tf train`")
    missing = [name for name in MODEL_FILES if not (path / name).exists()]
    if missing:
        raise OnboardingError(f"--model-dir {path}: {', '.join(missing)} missing; give the --out folder of a finished "
                              f"`mdl-tf train` (it writes saved_model/, transform.json and train_config.json)")
    meta = _read_json(path / "saved_model" / "assets.extra" / METADATA_FILE, "model metadata")
    if meta.get("model") != "mdl" or "vocab_sizes" not in meta:
        raise OnboardingError(f"--model-dir {path}: holds a {meta.get('model')!r} model; only MDL models (trained "
                              f"with `mdl-tf train --model mdl`) have scenario and task tokens to onboard")
    cfg = cfgmod.from_dict(meta["feature_config"], str(path / "saved_model" / "assets.extra" / METADATA_FILE))
    train_config = _read_json(path / "train_config.json", "training config")
    metrics = _read_json(path / "metrics.json", "metrics") if (path / "metrics.json").exists() else {}
    return TrainedModel(None, cfg, _read_json(path / STATS_FILE, "transform statistics"), meta, train_config,
                        metrics)


def load_saved(saved_model_dir, meta: dict, precision: str = "float32"):
    """The model of an MDL SavedModel (an `mdl-tf train` export, a pipeline Trainer's, or an onboarded one) rebuilt
    from its metadata (`assets.extra/mdl_metadata.json`, passed as `meta`) with its weights restored: an MDLModel,
    or an OnboardedMDL over one when the metadata lists onboarding steps. Raises ValueError if the checkpoint does
    not fit the metadata."""
    cfg = cfgmod.from_dict(meta["feature_config"], f"{saved_model_dir}/assets.extra/{METADATA_FILE}")
    onboarding = meta.get("onboarding")

    def build(hparams):
        base = build_model("mdl", _base_config(cfg, onboarding), meta["vocab_sizes"], precision=precision, **hparams)
        return make_onboarded(cfg, base, onboarding["steps"], precision) if onboarding else base

    return rebuild_model(saved_model_dir, meta, build)[0]


def load_trained(model_dir) -> TrainedModel:
    """`read_trained`, plus the model rebuilt from the metadata with its weights restored from the SavedModel."""
    trained = read_trained(model_dir)
    path = Path(model_dir)
    try:
        model = load_saved(path / "saved_model", trained.meta, _precision(trained))
    except ValueError as e:
        raise OnboardingError(f"--model-dir {path}: {e}") from None
    return dataclasses.replace(trained, model=model)


def onboarding_history(meta: dict, cfg: cfgmod.FeatureConfig, step: dict) -> dict:
    """The `onboarding` metadata of a model onboarded by `step` from the model with metadata `meta` and feature
    config `cfg`: the base model's scenario and task counts and every step so far, in order (how `load_saved`
    rebuilds it)."""
    history = dict(meta.get("onboarding") or {"base_scenarios": cfg.num_scenarios, "base_tasks": cfg.num_tasks,
                                               "steps": []})
    history["steps"] = [*history["steps"], step]
    return history


# -- requests -------------------------------------------------------------------------------------------------------
def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OnboardingError(f"--out {out}: already exists; give a new folder (the onboarded model is a new "
                              f"version next to the old one)")


def _check_name(name: str, what: str, taken: list, separator: str | None = None, int_values: bool = False) -> None:
    if not name or name != name.strip() or (separator and separator in name) or "/" in name:
        raise OnboardingError(f"--name {name!r}: not a valid {what} name; use a non-empty name without surrounding "
                              f"spaces, '/'{' or ' + repr(separator) if separator else ''}")
    if int_values and not cfgmod.is_plain_int(name):  # the cells' canonical text: 7 matches 7, never 07
        raise OnboardingError(f"--name {name}: this model's scenario column holds integers (scenario dtype: int); "
                              f"name the new scenario by its integer written plainly, e.g. 7 (not 07 or +7)")
    if name in taken:
        raise OnboardingError(f"--name {name}: the model already has a {what} named {name!r} (it has {taken}); "
                              f"pick a new name")


def _read_splits(data_dir, cfg) -> dict:
    frames = {"train": read_split(data_dir, "train", cfg)}
    if has_split(data_dir, "eval"):
        frames["eval"] = read_split(data_dir, "eval", cfg)
    return frames


def _new_scenario_rows(frame, cfg, transform) -> np.ndarray:
    """Boolean [N]: rows whose membership includes the config's last scenario (the transform's own rule)."""
    return transformed_arrays(frame, cfg, transform)[SCENARIO_MASK][:, -1] > 0


# -- scoring --------------------------------------------------------------------------------------------------------
def serve_examples(saved_model_dir, examples, batch_size: int = 4096) -> dict:
    """{task: probabilities [N]} of a SavedModel's serving_default (a local folder or a URI) on serialized
    tf.Examples, scored `batch_size` at a time (one load per folder while an onboarding runs)."""
    key = str(saved_model_dir) if is_uri(saved_model_dir) else str(Path(saved_model_dir).resolve())
    if key not in _LOADED:
        _LOADED[key] = tf.saved_model.load(key)
    serve = _LOADED[key].signatures["serving_default"]
    parts = [serve(examples=tf.constant(examples[i:i + batch_size])) for i in range(0, len(examples), batch_size)]
    return {k.removesuffix(OUTPUT_SUFFIX): np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}


def _serve(saved_model_dir, frame, cfg) -> dict:
    return serve_examples(saved_model_dir, rows_to_examples(frame, cfg))


_LOADED: dict = {}  # SavedModels loaded by serve_examples during one onboarding (cleared when it ends)


def check_bit_identical(old_dir, new_dir, examples) -> int:
    """Score serialized tf.Examples with both SavedModels; every output of the old one must be bit-identical in the
    new one. Returns the number of rows compared; raises RuntimeError (a bug, not a user error) on any difference."""
    old, new = serve_examples(old_dir, examples), serve_examples(new_dir, examples)
    for task, probs in old.items():
        if not np.array_equal(probs, new[task]):
            diff = float(np.max(np.abs(probs - new[task])))
            raise RuntimeError(f"onboarding changed existing output '{task}' (max |diff| {diff:g} on {len(examples)} "
                               f"rows); nothing was written")
    return len(examples)


def _metrics(frame, cfg, probs: dict, tasks: list) -> dict:
    return {t: task_metrics(frame[cfg.label_columns[cfg.task_names.index(t)]].to_numpy()[ok], probs[t][ok])
            for t in tasks for ok in [np.isfinite(frame[cfg.label_columns[cfg.task_names.index(t)]].to_numpy())]}


# -- training -------------------------------------------------------------------------------------------------------
def train_last_token(model: OnboardedMDL, ds: tf.data.Dataset, rows: int, num_tasks: int, oc: OnboardConfig,
                     task_columns: list) -> dict:
    """Fit the last appended token of `model` on `ds` ((features, {"labels", "label_mask"}) batches of `rows` rows;
    the loss counts the tasks in `task_columns` only); returns {epochs, seconds, rows, trainable_params, loss}.
    Raises RuntimeError if any frozen weight moved."""
    model.freeze_all_but_last()
    frozen = [v for v in model.model_weights() if v.ref() not in {w.ref() for w in model.trainable_weights}]
    before = [v.numpy() for v in frozen]
    keep = tf.constant(np.isin(np.arange(num_tasks), task_columns), tf.float32)
    ds = ds.map(lambda x, y: (x, {"labels": y["labels"], "label_mask": y["label_mask"] * keep}))
    model.compile(dense_lr=oc.dense_lr, sparse_lr=oc.sparse_lr)
    started = time.time()
    history = model.fit(ds, epochs=oc.epochs, verbose=0)
    seconds = time.time() - started
    if any(not np.array_equal(b, v.numpy()) for b, v in zip(before, frozen)):
        raise RuntimeError("a frozen weight changed while training the onboarded token; nothing was written")
    return {"epochs": oc.epochs, "seconds": round(seconds, 2), "rows": int(rows),
            "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
            "loss": [round(float(x), 5) for x in history.history.get("loss", [])]}


def _train_token(model: OnboardedMDL, frame, cfg, transform, oc: OnboardConfig, task_columns: list) -> dict:
    ds = make_dataset(frame, cfg, transform, oc.batch_size, shuffle=True, seed=oc.seed)
    return train_last_token(model, ds, len(frame), cfg.num_tasks, oc, task_columns)


def _write(out: Path, model, cfg, trained: TrainedModel, step: dict, frames: dict, report: dict, check) -> None:
    """Export the onboarded model into a temporary folder next to `out`, check old outputs are bit-identical,
    write the JSON files and rename the folder into place (nothing in `out` on any failure)."""
    tmp = out.with_name(f".{out.name}.onboarding-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        onboarding = onboarding_history(trained.meta, trained.cfg, step)
        rows = frames.get("eval", frames["train"])
        export_saved_model(model, FeatureTransform(cfg, trained.stats), cfg, tmp / "saved_model",
                           metadata={**{k: v for k, v in trained.meta.items()
                                        if k not in ("feature_config", "tasks", "scenarios", "outputs")},
                                     "onboarding": onboarding},
                           warmup=rows_to_examples(rows.iloc[:16], cfg))
        try:
            report.update(check(tmp / "saved_model"))
        finally:
            _LOADED.clear()
        save_stats(trained.stats, tmp)
        write_json(tmp / "train_config.json", {**trained.train_config, "onboarding": onboarding})
        history = [*trained.metrics.get("onboarding", []), report]
        write_json(tmp / "metrics.json", {**trained.metrics, "onboarding": history})
        if out.exists():
            out.rmdir()  # an empty folder (checked up front)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def add_scenario(model_dir, name: str, data_dir, out_dir, oc: OnboardConfig = OnboardConfig()) -> dict:
    """Onboard scenario `name`: append its token to the model in `model_dir`, train it on the rows of `data_dir`'s
    train split that belong to `name` (at least MIN_SCENARIO_ROWS), export to `out_dir`. Returns the report (also
    appended to metrics.json's "onboarding" list). Raises OnboardingError / DataError on bad input."""
    out = Path(out_dir)
    _check_out(out)
    trained = read_trained(model_dir)
    sc = trained.cfg.scenario
    _check_name(name, "scenario", list(sc.values), sc.separator, int_values=sc.dtype == "int")
    cfg = with_scenario(trained.cfg, name)
    frames = _read_splits(data_dir, cfg)
    transform = FeatureTransform(cfg, trained.stats)
    new_rows = _new_scenario_rows(frames["train"], cfg, transform)
    if new_rows.sum() < MIN_SCENARIO_ROWS:
        raise OnboardingError(f"{Path(data_dir) / 'train'}: {int(new_rows.sum())} rows of scenario {name!r} "
                              f"(column '{sc.column}'{', ' + repr(sc.membership_column) if sc.membership_column else ''}"
                              f"); onboarding needs at least {MIN_SCENARIO_ROWS}: add rows of the new scenario")
    trained = load_trained(model_dir)
    tf.keras.utils.set_random_seed(oc.seed)
    step = {"kind": "scenario", "name": name, "init_from": "global"}
    model = make_onboarded(cfg, _base_of(trained.model), [*_steps_of(trained.model), step], _precision(trained))
    _copy_appended(trained.model, model)
    train_frame = frames["train"][new_rows]
    report = {"kind": "scenario", "name": name, "data": str(data_dir),
              "train": _train_token(model, train_frame, cfg, transform, oc, list(range(cfg.num_tasks)))}
    eval_frame = frames.get("eval", frames["train"])
    eval_new = _new_scenario_rows(eval_frame, cfg, transform)
    old_rows = eval_frame[~eval_new].iloc[:CHECK_ROWS]
    new_eval = eval_frame[eval_new]
    old_saved = Path(model_dir) / "saved_model"

    def check(new_saved):
        old_examples = rows_to_examples(old_rows, trained.cfg)
        result = {"bit_identical_rows": check_bit_identical(old_saved, new_saved, old_examples)}
        if len(new_eval):
            tasks = cfg.task_names
            result["eval_rows"] = int(len(new_eval))
            result["eval_split"] = "eval" if "eval" in frames else "train"
            result["fallback"] = _metrics(new_eval, cfg, _serve(old_saved, new_eval, trained.cfg), tasks)
            result["onboarded"] = _metrics(new_eval, cfg, _serve(new_saved, new_eval, cfg), tasks)
        return result

    _write(out, model, cfg, trained, step, frames, report, check)
    return report


def add_task(model_dir, name: str, label: str, data_dir, out_dir, oc: OnboardConfig = OnboardConfig(),
             init_from: str | None = None) -> dict:
    """Onboard task `name` with 0/1 label column `label`: append a task token and head initialised from task
    `init_from` (default: the first task), train it on the labelled rows of `data_dir`'s train split (at least
    MIN_TASK_ROWS, both classes), export to `out_dir`. Returns the report. Raises OnboardingError / DataError."""
    out = Path(out_dir)
    _check_out(out)
    trained = read_trained(model_dir)
    _check_name(name, "task", trained.cfg.task_names)
    base_tasks = trained.cfg.task_names[:(trained.meta.get("onboarding") or {}).get("base_tasks",
                                                                                  trained.cfg.num_tasks)]
    init_from = init_from or base_tasks[0]
    if init_from not in base_tasks:
        raise OnboardingError(f"--init-from {init_from}: not a task the model was trained with ({base_tasks})")
    if not label or label in trained.cfg.label_columns or label in trained.cfg.required_columns:
        raise OnboardingError(f"--label {label!r}: already a label or feature column of the model; the new task "
                              f"needs its own 0/1 label column")
    _check_label_column(data_dir, label)
    cfg = with_task(trained.cfg, name, label)
    tf.keras.utils.set_random_seed(oc.seed)
    frames = _read_splits(data_dir, cfg)  # checks every label cell: 0, 1 or empty
    y = frames["train"][label].to_numpy()
    labelled = y[np.isfinite(y)]
    if len(labelled) < MIN_TASK_ROWS or labelled.min() == labelled.max():
        raise OnboardingError(f"{Path(data_dir) / 'train'}: column '{label}' has {len(labelled)} labelled rows"
                              f"{' all ' + str(int(labelled[0])) if len(labelled) and labelled.min() == labelled.max() else ''}"
                              f"; a new task needs at least {MIN_TASK_ROWS} with both 0 and 1")
    transform = FeatureTransform(cfg, trained.stats)
    trained = load_trained(model_dir)
    step = {"kind": "task", "name": name, "label": label, "init_from": init_from}
    model = make_onboarded(cfg, _base_of(trained.model), [*_steps_of(trained.model), step], _precision(trained))
    _copy_appended(trained.model, model)
    eval_frame = frames.get("eval", frames["train"])
    before = _predict(model, eval_frame, cfg, transform, name)
    report = {"kind": "task", "name": name, "label": label, "init_from": init_from, "data": str(data_dir),
              "train": _train_token(model, frames["train"], cfg, transform, oc, [cfg.num_tasks - 1])}
    old_saved = Path(model_dir) / "saved_model"

    def check(new_saved):
        probs = _serve(new_saved, eval_frame, cfg)
        return {"bit_identical_rows": check_bit_identical(
                    old_saved, new_saved, rows_to_examples(eval_frame.iloc[:CHECK_ROWS], trained.cfg)),
                "eval_split": "eval" if "eval" in frames else "train",
                "initial": _metrics(eval_frame, cfg, {name: before}, [name]),
                "onboarded": _metrics(eval_frame, cfg, probs, [name])}

    _write(out, model, cfg, trained, step, frames, report, check)
    return report


def _check_label_column(data_dir, label: str) -> None:
    import pandas as pd

    files = split_files(data_dir, "train")
    if not files:
        return  # read_split names the missing files
    path = files[0]  # every file of a split has its header (read_split checks)
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError):
        return  # read_split reports what is wrong with the file
    if label not in header:
        raise OnboardingError(f"{path}: no column '{label}' (--label); the data needs the new task's 0/1 label column")


def _predict(model, frame, cfg, transform, task: str) -> np.ndarray:
    ds = make_dataset(frame, cfg, transform, 2048).map(lambda x, y: x)
    return model.predict(ds, verbose=0)[task]


def _precision(trained: TrainedModel) -> str:
    return trained.train_config.get("precision", "float32")


def _base_of(model):
    return model.base if isinstance(model, OnboardedMDL) else model


def _steps_of(model) -> list:
    return list(model.steps) if isinstance(model, OnboardedMDL) else []


def _copy_appended(old, new: OnboardedMDL) -> None:
    """Earlier onboarded tokens keep their trained values in the new model."""
    if isinstance(old, OnboardedMDL):
        for a, b in zip(old.appended, new.appended):
            for va, vb in zip(a.weights, b.weights):
                vb.assign(va)
