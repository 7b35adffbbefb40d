"""The TFX Trainer `run_fn`: builds any registered model by name from the custom config, trains it on the
Transform's output with the shared two-optimizer step, and exports the serving SavedModel (the TFT graph inside,
`serving_default` on raw tf.Examples, one `<task>_probability` output per task, warmup requests in assets.extra).

custom_config (see `tfx_pipeline.pipeline.configs.custom_config`):
  feature_config  the dataset's features.yaml as a dict
  model           a name from `mdl_tf.models.REGISTRY` (default "mdl")
  hparams         keyword arguments of that model
  train           {batch_size, epochs, dense_lr, sparse_lr, seed, precision, jit_compile, strategy, ...}
                  (strategy: mdl_tf.training.distribute.STRATEGIES; the multi-process ones read TF_CONFIG)
  model_name      the TF Serving model name written into the warmup requests
  warm_start      true: continue from `fn_args.base_model` (the latest blessed model, wired by the pipeline's
                  `--warm-start`): weights, optimizer slots and embedding rows remapped by id
                  (`mdl_tf.training.warm_start`); no base model yet -> trains from scratch and says so
  onboard         {"scenario": NAME, ...}: onboarding mode (`--add-scenario`), `tfx_pipeline.models.onboarding`

The export's metadata records the Transform graph it was trained on (`transform_graph`), which onboarding reuses.
Every run also writes the warm-start state of the model it trained into `<model artifact>/warm_start/` (next to
`Format-Serving/`, so the Pusher does not ship it), which a later warm-started run reads; an onboarding run writes
the onboarded model folded into a regular MDL (the new scenario a regular row, weights only), so a warm-started run
whose features.yaml lists that scenario last continues from it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time

import mdl_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from mdl_tf.config import FeatureConfig
from mdl_tf.data.transform import is_hashed_owner, table_sizes
from mdl_tf.errors import InvalidSetting
from mdl_tf.export import export_saved_model, read_metadata
from mdl_tf.models import build_model
from mdl_tf.serving.examples import rows_to_examples
from mdl_tf.serving.warmup import synthetic_rows
from mdl_tf.training import distribute
from mdl_tf.training import warm_start as ws
from mdl_tf.training.diagnostics import finite_or_none
from mdl_tf.training.trainer import BestEpoch, TrainConfig, sized_hparams
from mdl_tf.utils import join, write_json
from tfx_pipeline.models.preprocessing import LABEL_MASK, LABELS, vocabulary_name
from tfx_pipeline.pipeline import configs

log = logging.getLogger(__name__)
WEIGHTS = "weights"               # <model_run_dir>/weights: the trained Keras weights (checkpoint format)
TRAINER_METRICS = "metrics.json"  # <model_run_dir>/metrics.json


class EpochLine(tf.keras.callbacks.Callback):
    """One line per training epoch on stdout (Keras' own progress output is off): loss, the eval AUC per task when
    there is validation, and the epoch's time; the full history goes to the Trainer's metrics.json."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs
        self.started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        aucs = ", ".join(f"{k[len('val_auc_'):]} {v:.4f}" if math.isfinite(v) else f"{k[len('val_auc_'):]} n/a (one "
                         f"class)" for k, v in sorted(logs.items()) if k.startswith("val_auc_"))
        print(f"          Trainer epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', float('nan')):.4f}"
              f"{f', eval AUC {aucs}' if aucs else ''} ({time.time() - self.started:.1f} s)", flush=True)


def train_config_from(custom_config: dict) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    given = dict(custom_config.get("train") or {})
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidSetting(unknown[0], f"custom_config.train has unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return TrainConfig(model=custom_config.get("model", "mdl"), **given)
    except InvalidSetting as e:
        raise InvalidSetting(e.setting, f"custom_config.train.{e.setting}: {e}") from e


def check_trainer_settings(model: str, hparams: dict | None, train: dict | None) -> None:
    """Part of what the Trainer would refuse, refused when the pipeline is built (`local_runner.run`,
    `compile_pipeline`), before any component runs: an unknown model or hyperparameter name, a training setting out of
    range (InvalidSetting). A hyperparameter's value is checked by the model's constructor, in the Trainer."""
    from mdl_tf.models import check_hparam_names

    check_hparam_names(model, hparams or {})
    train_config_from({"model": model, "train": train or {}})


def split_labels(batch: dict):
    """(features, {labels, label_mask}): the label outputs of the Transform never reach the model's inputs."""
    targets = {LABELS: batch[LABELS], LABEL_MASK: batch[LABEL_MASK]}
    features = {k: v for k, v in batch.items() if k not in (LABELS, LABEL_MASK)}
    return features, targets


def input_fn(files, data_accessor, tft_output, batch_size: int, num_epochs=None, shuffle=False,
             seed: int = 0) -> tf.data.Dataset:
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed,
                                             num_epochs=num_epochs)
    ds = data_accessor.tf_dataset_factory(files, options, tft_output.transformed_metadata.schema)
    return ds.map(split_labels, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def vocab_sizes_from(tft_output, cfg: FeatureConfig) -> dict:
    """Embedding-table rows per id feature: the Transform's vocabulary sizes, `hash_buckets` for hashed features
    (which have no vocabulary file)."""
    return table_sizes(cfg, lambda owner: tft_output.vocabulary_size_by_name(vocabulary_name(owner)))


def build_from_transform(tft_output, custom_config: dict):
    """(model, feature config, train config, model hparams) sized from the Transform's vocabularies (and to the
    dense-parameter budget, when the train config has one)."""
    cfg = configs.feature_config_from(custom_config)
    tc = train_config_from(custom_config)
    sizes = vocab_sizes_from(tft_output, cfg)
    hparams = sized_hparams(tc, cfg, sizes, dict(custom_config.get("hparams") or {}))
    model = build_model(tc.model, cfg, sizes, precision=tc.precision, **hparams)
    return model, cfg, tc, hparams


def serving_raw_spec(tft_output, cfg: FeatureConfig) -> dict:
    """The Transform's raw parsing spec, restricted to the model's raw inputs (labels and bookkeeping columns out)."""
    spec = tft_output.raw_feature_spec()
    return {c: spec[c] for c in cfg.raw_feature_columns}


def warmup_examples(tft_output, cfg: FeatureConfig, count: int) -> list:
    vocabs = {}
    for owner in {cfg.vocab_owner(f) for f in cfg.features if f.is_id_feature}:
        if is_hashed_owner(cfg, owner):
            continue  # no vocabulary: synthetic_rows makes up ids, which hash like any other
        vocabs[owner] = [t.decode() if isinstance(t, bytes) else str(t)
                         for t in tft_output.vocabulary_by_name(vocabulary_name(owner))[:64]]
    import pandas as pd

    return rows_to_examples(pd.DataFrame(synthetic_rows(cfg, vocabs, count)), cfg)


def vocabularies_from(tft_output, cfg: FeatureConfig) -> dict:
    """{owner: [id bytes, ...]} of every vocabulary owner, in row order (row 2 + i); hashed owners have none."""
    owners = {cfg.vocab_owner(f) for f in cfg.features if f.is_id_feature}
    return {o: list(tft_output.vocabulary_by_name(vocabulary_name(o))) for o in sorted(owners)
            if not is_hashed_owner(cfg, o)}


def state_dir_of(serving_model_dir: str) -> str:
    """`<model artifact>/warm_start` for a model artifact's `<uri>/Format-Serving` directory."""
    return f"{str(serving_model_dir).rstrip('/').rsplit('/', 1)[0]}/{ws.STATE_DIR}"


def say(line: str) -> None:
    print(f"          Trainer {line}", flush=True)
    log.info("Trainer %s", line)


def apply_warm_start(fn_args, model, cfg: FeatureConfig, tft_output, tc: TrainConfig, hparams: dict) -> dict:
    """Warm-start `model` from `fn_args.base_model` (see the module docstring); returns the report for metrics.json:
    {"base_model": uri or None, "reason"?, "features"?, ...}."""
    if not fn_args.base_model:
        say("warm start: no blessed model yet; training from scratch")
        return {"base_model": None, "reason": "no blessed model yet"}
    state = state_dir_of(fn_args.base_model)
    has_state = ws.read_manifest(state) is not None
    if not has_state and _onboarded(fn_args.base_model):
        say(f"warm start: the blessed model {fn_args.base_model} was onboarded (--add-scenario) before onboarding "
            f"wrote a warm-start state; training from scratch")
        return {"base_model": fn_args.base_model, "reason": "onboarded model"}
    if not has_state:
        say(f"warm start: the blessed model {fn_args.base_model} has no warm-start state (trained before warm "
            f"starts existed); training from scratch")
        return {"base_model": fn_args.base_model, "reason": "no warm-start state"}
    report = ws.warm_start(model, state, cfg, vocabularies_from(tft_output, cfg),
                           metadata={"model": tc.model, "hparams": hparams})
    say(f"warm start from {fn_args.base_model}: {report['weights']} weights, {report['slots']} optimizer slots")
    for line in ws.describe(report):
        say(f"warm start: {line}")
    return {"base_model": fn_args.base_model, **report}


def _onboarded(saved_model_dir: str) -> bool:
    return bool((read_metadata(saved_model_dir) or {}).get("onboarding"))


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (`Trainer(run_fn='tfx_pipeline.models.model.run_fn')`)."""
    custom = fn_args.custom_config or {}
    if custom.get("onboard"):
        from tfx_pipeline.models.onboarding import run_onboarding

        run_onboarding(fn_args, custom)
        return
    tc = train_config_from(custom)
    strategy = distribute.make_strategy(tc.strategy, tc.ps_min_shard_bytes)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    tf.keras.utils.set_random_seed(tc.seed)
    with strategy.scope():  # model, both optimizers and the metrics live in the strategy
        model, cfg, tc, hparams = build_from_transform(tft_output, custom)
        model.compile(**tc.compile_args())
        warm = apply_warm_start(fn_args, model, cfg, tft_output, tc, hparams) if custom.get("warm_start") else None

    epochs = max(1, tc.epochs)
    train_steps = int(fn_args.train_steps or configs.TRAIN_STEPS)
    steps_per_epoch = max(1, train_steps // epochs)
    eval_steps = int(fn_args.eval_steps) if fn_args.eval_steps else None
    train_input = distribute.dataset_input(strategy, lambda ctx: input_fn(
        fn_args.train_files, fn_args.data_accessor, tft_output, ctx.get_per_replica_batch_size(tc.batch_size),
        shuffle=True, seed=tc.seed + ctx.input_pipeline_id))
    validation = {}
    if not distribute.is_parameter_server(strategy):  # asynchronous training has no per-epoch validation here
        validation = {"validation_data": distribute.dataset_input(strategy, lambda ctx: input_fn(
            fn_args.eval_files, fn_args.data_accessor, tft_output, max(tc.batch_size, 1024),
            num_epochs=None if eval_steps else 1)), "validation_steps": eval_steps}
    best = BestEpoch(cfg.task_names, 0 if validation == {} else tc.early_stopping_patience)
    callbacks = [best]
    if distribute.is_chief(strategy):
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch"))
    log.info("training %s (%s strategy): %d steps (%d epochs x %d), batch %d", tc.model, tc.strategy,
             steps_per_epoch * epochs, epochs, steps_per_epoch, tc.batch_size)
    started = time.time()
    callbacks.append(EpochLine(epochs))
    history = model.fit(train_input, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                        verbose=0, **validation)
    if not distribute.is_chief(strategy):
        log.info("worker done; the chief exports")
        return
    if best.best_epoch >= 0:  # BestEpoch restored that epoch's weights: the last epoch printed may not be the export
        say(f"kept epoch {best.best_epoch + 1}/{epochs} (the best mean eval AUC, {best.best:.4f}); it is exported")
    # The warm-start state of this model, for tomorrow's run: with optimizer slots when the optimizers live on this
    # machine (default and mirrored strategies), the weights alone otherwise.
    state_meta = {"model": tc.model, "hparams": hparams}
    vocabs = vocabularies_from(tft_output, cfg)
    local_optimizers = tc.strategy in ("default", "mirrored")
    if local_optimizers:
        ws.save_state(state_dir_of(fn_args.serving_model_dir), model, cfg, vocabs, state_meta)
    model = distribute.undistributed(model, strategy, lambda: build_model(  # same SavedModel whatever trained it
        tc.model, cfg, vocab_sizes_from(tft_output, cfg), precision=tc.precision, **hparams))

    if not local_optimizers:
        ws.save_state(state_dir_of(fn_args.serving_model_dir), model, cfg, vocabs, state_meta, with_slots=False)

    run_dir = fn_args.model_run_dir  # a string join throughout: on Kubeflow it is a URI (gs://...)
    tf.io.gfile.makedirs(run_dir)
    model.save_weights(join(run_dir, WEIGHTS))
    params = model.param_counts()
    write_json(join(run_dir, TRAINER_METRICS), {
        "model": tc.model, "params": params, "best_epoch": best.best_epoch + 1 if best.best_epoch >= 0 else None,
        "best_mean_eval_auc": best.best if best.best_epoch >= 0 else None,
        "history": {k: [finite_or_none(x) for x in v] for k, v in history.history.items()},  # NaN AUC -> null
        "train_seconds": round(time.time() - started, 2), "train_steps": steps_per_epoch * epochs,
        "hparams": hparams, "train": dataclasses.asdict(tc), "warm_start": warm})

    model_name = custom.get("model_name", configs.MODEL_NAME)
    export_saved_model(
        model, tft_output.transform_features_layer(), cfg, fn_args.serving_model_dir,
        raw_spec=serving_raw_spec(tft_output, cfg),
        warmup=warmup_examples(tft_output, cfg, configs.WARMUP_REQUESTS),
        metadata={"model": tc.model, "model_name": model_name, "feature_config_version": cfg.version,
                  "hparams": hparams, "code_version": custom.get("code_version"),
                  "vocab_sizes": vocab_sizes_from(tft_output, cfg), "precision": tc.precision,
                  "transform_graph": fn_args.transform_output,
                  "trainer_metrics": params})
