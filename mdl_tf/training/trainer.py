"""`mdl-tf train`: read a dataset, fit the transform, train any registered model, evaluate, export.

OUT/ gets `saved_model/` (transform + model + signatures), `metrics.json`, `transform.json` and `train_config.json`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from mdl_tf import config as cfgmod
from mdl_tf.data.io import has_split, read_split, warn_unseen_scenarios
from mdl_tf.data.transform import (SCENARIO_MASK, FeatureTransform, fit_stats, labels_and_mask, raw_columns,
                                   save_stats, vocab_sizes)
from mdl_tf.evaluation import evaluate_predictions, mean_auc
from mdl_tf.export import export_saved_model
from mdl_tf.models import build_model
from mdl_tf.models.base import DEFAULT_DENSE_LR, DEFAULT_SPARSE_ACCUMULATOR, DEFAULT_SPARSE_LR
from mdl_tf.serving.examples import rows_to_examples
from mdl_tf.training import diagnostics, distribute
from mdl_tf.training.data import make_dataset, transformed_arrays
from mdl_tf.training.settings import check_model_sizes, check_optimizer_settings
from mdl_tf.utils import write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    model: str = "mdl"
    batch_size: int = 512
    epochs: int = 1                 # the paper trains one pass in time order
    dense_lr: float = DEFAULT_DENSE_LR    # RMSprop (see mdl_tf.models.base for why not the spec's 1e-2)
    sparse_lr: float = DEFAULT_SPARSE_LR  # Adagrad
    sparse_accumulator: float = DEFAULT_SPARSE_ACCUMULATOR  # Adagrad's initial accumulator (the spec's: 0.1)
    oov_rate: float = 0.0           # training rows' categorical ids -> OOV with this probability (trains the OOV row)
    weight_decay: float = 0.0       # decoupled weight decay of the dense weight matrices (see MultiDistributionModel)
    warmup_steps: int = 0           # linear warm-up of the dense learning rate over this many steps; 0 = off
    seed: int = 0
    precision: str = "float32"      # or mixed_float16 / mixed_bfloat16
    jit_compile: bool = False
    early_stopping_patience: int = 0  # epochs without eval mean-AUC gain before stopping; 0 = off
    max_steps_per_epoch: int | None = None
    dense_params: int | None = None  # size the model's width to this dense-parameter budget (±5%)
    strategy: str = "default"       # see mdl_tf.training.distribute.STRATEGIES
    ps_min_shard_bytes: int = distribute.PS_MIN_SHARD_BYTES  # parameter_server: shard variables over this size
    verbose: int = 1
    export: bool = True             # write OUT/saved_model (benchmarks that only need metrics skip it)
    save_test_predictions: bool = False  # write OUT/test_predictions.npz (probabilities [N, N_t], test-split order)

    def __post_init__(self):
        # Checked here, not only at compile: a bad rate stops the run before the data is read and the model built.
        check_optimizer_settings(dense_lr=self.dense_lr, sparse_lr=self.sparse_lr,
                                 sparse_accumulator=self.sparse_accumulator, oov_rate=self.oov_rate,
                                 weight_decay=self.weight_decay, warmup_steps=self.warmup_steps)
        steps = {} if self.max_steps_per_epoch is None else {"max_steps_per_epoch": self.max_steps_per_epoch}
        check_model_sizes(epochs=self.epochs, batch_size=self.batch_size, **steps)

    def compile_args(self) -> dict:
        """The keyword arguments of MultiDistributionModel.compile this configuration sets (both trainers use it)."""
        return dict(dense_lr=self.dense_lr, sparse_lr=self.sparse_lr, sparse_accumulator=self.sparse_accumulator,
                    oov_rate=self.oov_rate, weight_decay=self.weight_decay, warmup_steps=self.warmup_steps,
                    jit_compile=self.jit_compile)


class BestEpoch(tf.keras.callbacks.Callback):
    """Tracks the mean validation AUC over tasks, keeps the best weights, stops after `patience` bad epochs.

    A task whose eval rows hold one class has no AUC (NaN, `DefinedAUC`): the mean is over the others, and the end of
    training warns about it. With no defined AUC at all no epoch is chosen and the last one stays."""

    def __init__(self, task_names, patience: int):
        super().__init__()
        self.keys = [f"val_auc_{t}" for t in task_names]
        self.patience = patience
        self.best, self.best_epoch, self.best_weights, self.bad = -np.inf, -1, None, 0
        self.undefined = set()  # tasks whose eval AUC was undefined in some epoch

    def on_epoch_end(self, epoch, logs=None):
        vals = [logs[k] for k in self.keys if logs and k in logs]
        self.undefined |= {k[len("val_auc_"):] for k in self.keys if logs and k in logs and not np.isfinite(logs[k])}
        vals = [v for v in vals if np.isfinite(v)]
        if not vals and self.keys and logs and any(k in logs for k in self.keys):
            return  # no defined AUC this epoch: neither a best nor a bad epoch (patience would stop on it)
        score = float(np.mean(vals)) if vals else -np.inf
        if score > self.best:
            self.best, self.best_epoch, self.bad = score, epoch, 0
            self.best_weights = [v.numpy() for v in self.model.model_weights()]
        else:
            self.bad += 1
            if self.patience and self.bad >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.undefined:
            log.warning("the eval rows of task(s) %s hold one class only (no positive or no negative label): their "
                        "AUC is undefined, so %s; put rows of both classes in the eval split", sorted(self.undefined),
                        "the epoch was chosen by the other tasks' mean AUC" if self.best_epoch >= 0 else
                        "no epoch could be chosen and the last one is kept")
        if self.best_weights is not None:
            for var, value in zip(self.model.model_weights(), self.best_weights):
                var.assign(value)


def _stage(tc: TrainConfig, line: str, since: float) -> float:
    """Report one post-training stage ("evaluated 4,000 eval rows (3.1 s)"): printed when `tc.verbose` (the command
    line; benchmarks train quietly), always logged with its timestamp. Returns the time, the next stage's start."""
    line = f"{line} ({time.time() - since:.1f} s)"
    if tc.verbose:
        print(line, flush=True)
    log.info("train: %s", line)
    return time.time()


def sized_hparams(tc: TrainConfig, cfg, sizes: dict, hparams: dict) -> dict:
    """hparams with the width knobs set to meet `tc.dense_params` (unchanged when no budget is given)."""
    if not tc.dense_params:
        return hparams
    from mdl_tf.models.sizing import size_to_budget

    sized = size_to_budget(tc.model, cfg, sizes, tc.dense_params, **hparams)
    log.info("%s sized to %d dense parameters (%+.1f%% of %d): %s", tc.model, sized["dense_params"],
             100 * sized["relative_error"], tc.dense_params, sized["hparams"])
    return sized["hparams"]


def _fit_inputs(strategy, frames: dict, cfg, transform, tc: TrainConfig) -> dict:
    """model.fit's data arguments under `strategy`."""
    steps = tc.max_steps_per_epoch or -(-len(frames["train"]) // tc.batch_size)
    if not distribute.is_parameter_server(strategy):
        train = make_dataset(frames["train"], cfg, transform, tc.batch_size, shuffle=True, seed=tc.seed)
        if tc.strategy != "default":
            # Every replica must run the same number of steps: repeat the data and count them (an iterator that
            # runs dry on one worker only would leave the others waiting in a collective).
            train = train.repeat()
        return {"x": distribute.dataset_input(strategy, lambda ctx: train),
                "validation_data": distribute.dataset_input(strategy, lambda ctx: make_dataset(
                    frames["eval"], cfg, transform, max(tc.batch_size, 2048))),
                "steps_per_epoch": steps if tc.strategy != "default" else tc.max_steps_per_epoch}
    # Parameter servers: workers build the input from a function. The transform runs here, once, so the
    # workers receive id tensors and need none of the coordinator's lookup tables.
    features = transform(raw_columns(frames["train"], cfg))
    labels, mask = labels_and_mask(frames["train"], cfg)
    targets = {"labels": labels, "label_mask": mask}

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((features, targets))
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        ds = ds.shuffle(min(len(frames["train"]), 100_000), seed=tc.seed).repeat()
        return ds.batch(ctx.get_per_replica_batch_size(tc.batch_size)).prefetch(tf.data.AUTOTUNE)

    return {"x": distribute.dataset_input(strategy, dataset_fn), "steps_per_epoch": steps}


def predict_arrays(model, arrays: dict, task_names, batch_size: int = 2048) -> np.ndarray:
    """Probabilities [N, N_t] for transformed inputs {name: [N, ...]} (`transformed_arrays`)."""
    ds = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    out = model.predict(ds, verbose=0)
    return np.stack([np.reshape(out[t], [-1]) for t in task_names], axis=1)


def predict_frame(model, frame, cfg, transform, batch_size: int = 2048) -> np.ndarray:
    """Probabilities [N, N_t] for a validated frame."""
    return predict_arrays(model, transformed_arrays(frame, cfg, transform), cfg.task_names, batch_size)


def evaluate_frame(model, frame, cfg, transform, return_probs: bool = False):
    """The metrics.json body of `frame` (and the probabilities [N, N_t] when `return_probs`).

    The frame is transformed once: the predictions and the scenario masks of the slices read the same arrays."""
    arrays = transformed_arrays(frame, cfg, transform)
    probs = predict_arrays(model, arrays, cfg.task_names)
    labels, mask = labels_and_mask(frame, cfg)
    users = frame[cfg.user_column].to_numpy() if cfg.user_column else None
    metrics = evaluate_predictions(cfg.task_names, cfg.scenario_names, probs, labels, mask,
                                   arrays[SCENARIO_MASK], users)
    return (metrics, probs) if return_probs else metrics


def train(data_dir, schema_dir, out_dir, tc: TrainConfig = TrainConfig(), hparams: dict | None = None,
          frames: dict | None = None) -> dict:
    """Train `tc.model` on `data_dir` with the feature config in `schema_dir`; returns the metrics dict.

    `frames` ({"train", "eval"[, "test"]: validated frames}) skips reading the splits again (benchmarks that train
    many models on one dataset pass them); the test split is reported when present, never used for selection.
    """
    strategy = distribute.make_strategy(tc.strategy, tc.ps_min_shard_bytes)  # first: before any other TF work
    hparams = dict(hparams or {})
    cfg = cfgmod.load(schema_dir)
    out = Path(out_dir)
    tf.keras.utils.set_random_seed(tc.seed)

    frames = dict(frames) if frames else {s: read_split(data_dir, s, cfg) for s in ("train", "eval")}
    warn_unseen_scenarios(frames["train"], cfg, Path(data_dir) / "train")
    stats = fit_stats(frames["train"], cfg)
    transform = FeatureTransform(cfg, stats)
    sizes = vocab_sizes(cfg, stats)

    hparams = sized_hparams(tc, cfg, sizes, hparams)
    with strategy.scope():  # model, both optimizers and the metrics live in the strategy
        model = build_model(tc.model, cfg, sizes, precision=tc.precision, **hparams)
        model.compile(**tc.compile_args())
    fit_args = _fit_inputs(strategy, frames, cfg, transform, tc)
    best = BestEpoch(cfg.task_names, 0 if distribute.is_parameter_server(strategy) else tc.early_stopping_patience)
    started = time.time()
    history = model.fit(epochs=tc.epochs, callbacks=[best], verbose=tc.verbose, **fit_args)
    train_seconds = time.time() - started
    if not distribute.is_chief(strategy):
        log.info("worker done after %.1f s; the chief evaluates and exports", train_seconds)
        return {"model": tc.model, "role": "worker", "train_seconds": round(train_seconds, 2)}
    where = distribute.placement(model)
    train_steps = int(model.optimizer.iterations.numpy())  # read before the plain copy replaces the model
    stage = _stage(tc, f"trained {train_steps:,} steps", started)
    plain = distribute.undistributed(model, strategy, lambda: build_model(  # same SavedModel whatever trained it
        tc.model, cfg, sizes, precision=tc.precision, **hparams))
    if plain is not model:
        stage = _stage(tc, f"copied the weights out of the {tc.strategy} strategy", stage)
    model = plain

    out.mkdir(parents=True, exist_ok=True)
    save_stats(stats, out)
    metrics = {"model": tc.model, "params": model.param_counts(),
               **evaluate_frame(model, frames["eval"], cfg, transform),
               "split": "eval", "mean_scenario_task_auc": None,
               "best_epoch": best.best_epoch + 1 if best.best_epoch >= 0 else None,
               "epochs_run": len(history.history.get("loss", [])), "train_seconds": round(train_seconds, 2),
               "train_rows": int(len(frames["train"])), "train_steps": train_steps, "precision": tc.precision,
               "hparams": hparams,
               "distribution": {"strategy": tc.strategy, "replicas": int(strategy.num_replicas_in_sync), **where}}
    metrics["mean_scenario_task_auc"] = mean_auc(metrics)
    features, targets = diagnostics.eval_batch(frames["eval"], cfg, transform)
    if hasattr(model, "attention_maps"):
        metrics["attention_entropy"] = diagnostics.attention_entropy(model, features)
    metrics["diagnostics"] = diagnostics.diagnose(model, features, targets, history.history)
    stage = _stage(tc, f"evaluated {len(frames['eval']):,} eval rows and the diagnostics", stage)
    dead = sorted(k for k, v in metrics["diagnostics"]["gradient_norms"].items() if v == 0.0)
    if dead:  # a weight no gradient reaches never learns (how DFFM's dynamic weights once stayed at zero)
        log.warning("no gradient reaches component %s (gradient norm 0 over all its weights, on an eval batch after "
                    "training): it never learns; check how the model reads it (metrics.json: "
                    "diagnostics.gradient_norms)", ", ".join(dead))
    if "test" in frames or has_split(data_dir, "test"):
        # Held out from model selection (early stopping reads the eval split): what benchmarks report.
        test_frame = frames["test"] if "test" in frames else read_split(data_dir, "test", cfg)
        test, probs = evaluate_frame(model, test_frame, cfg, transform, return_probs=True)
        metrics["test"] = {**test, "mean_scenario_task_auc": mean_auc(test)}
        stage = _stage(tc, f"evaluated {len(test_frame):,} test rows", stage)
        if tc.save_test_predictions:
            from mdl_tf.utils import atomic_save_npz

            atomic_save_npz(out / "test_predictions.npz", probabilities=probs.astype(np.float32),
                            tasks=np.asarray(cfg.task_names))
    if not tc.export:
        write_json(out / "metrics.json", metrics)
        return metrics
    export_saved_model(model, transform, cfg, out / "saved_model",
                       metadata={"model": tc.model, "feature_config_version": cfg.version, "hparams": hparams,
                                 "vocab_sizes": sizes},
                       warmup=rows_to_examples(frames["eval"].iloc[:16], cfg))
    _stage(tc, f"exported {out / 'saved_model'}", stage)
    write_json(out / "train_config.json", {**dataclasses.asdict(tc), "data_dir": str(data_dir),
                                           "schema_dir": str(schema_dir), "hparams": hparams})
    write_json(out / "metrics.json", metrics)
    return metrics
