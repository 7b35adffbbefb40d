"""SavedModel export: the transform and the model in one servable artefact.

Signatures (all Predict signatures, as TF Serving expects):
* `serving_default`: serialized `tf.Example`s of raw features -> {"<task>_probability": [B]}
* `serving_raw`: raw feature tensors [B] -> the same outputs
* `transform_features`: serialized `tf.Example`s -> the transformed features the model reads
A directory is written under a temporary name and renamed into place, so a reader never sees a partial model.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import tensorflow as tf

from mdl_tf.config import FeatureConfig
from mdl_tf.errors import InvalidSetting
from mdl_tf.models.base import OPTIMIZERS, with_all_hparams
from mdl_tf.utils import is_uri, join

OUTPUT_SUFFIX = "_probability"


def output_name(task: str) -> str:
    """The serving output of `task`'s probability ([B] float32), e.g. click -> click_probability."""
    return f"{task}{OUTPUT_SUFFIX}"
METADATA_FILE = "mdl_metadata.json"


def raw_feature_spec(cfg: FeatureConfig) -> dict:
    """tf.Example parsing spec of the raw serving inputs (labels never included): numerics and string ids parse
    to [B] with NaN / "" when absent, int ids to a [B, <=1] SparseTensor (absent = no value)."""
    numeric = {f.name for f in cfg.features_of_kind("numeric")}
    dtypes = {f.name: f.dtype for f in cfg.features}
    dtypes[cfg.scenario.column] = cfg.scenario.dtype
    spec = {}
    for col in cfg.raw_feature_columns:
        if col in numeric:
            spec[col] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
        elif dtypes.get(col) == "int":
            # No default: an absent int id must stay missing (every int64 is a possible id, even -1); the transform
            # reads the [B, <=1] SparseTensor as TF Transform does.
            spec[col] = tf.io.VarLenFeature(tf.int64)
        else:
            spec[col] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def _as_parsed(x: tf.Tensor, feature) -> tf.Tensor:
    """A dense [B] raw input in the form tf.io.parse_example gives for `feature` (one value per row)."""
    if isinstance(feature, tf.io.VarLenFeature):
        rows = tf.range(tf.shape(x, out_type=tf.int64)[0])
        return tf.SparseTensor(tf.stack([rows, tf.zeros_like(rows)], axis=1), x, tf.stack([tf.size(rows, tf.int64), 1]))
    if feature.shape:
        return tf.reshape(x, [-1, *feature.shape])
    return x


class ServingModule(tf.Module):
    """What gets saved: the fitted transform, the trained model and their signatures.

    transform: FeatureTransform (`mdl-tf train`) or TF Transform's TransformFeaturesLayer (the TFX Trainer);
    raw_spec: how serialized tf.Examples are parsed for it (labels never included).
    """

    def __init__(self, model: tf.keras.Model, transform, cfg: FeatureConfig, raw_spec: dict | None = None):
        super().__init__(name="mdl_serving")
        self.model = model
        self.transform = transform
        self._cfg = cfg
        self._spec = dict(raw_spec) if raw_spec is not None else raw_feature_spec(cfg)
        leaked = set(self._spec) & set(cfg.label_columns)
        if leaked:
            raise ValueError(f"serving inputs must not contain label columns {sorted(leaked)}")

    def _outputs(self, transformed):
        probs = self.model(transformed, training=False)
        return {output_name(t): tf.cast(probs[t], tf.float32) for t in self._cfg.task_names}

    def signatures(self) -> dict:
        # autograph=False: the model and transforms are plain TF (see mdl_tf.models.base._plain_python); skipping the
        # source conversion makes every export faster to trace, with the same graph.
        examples = tf.TensorSpec([None], tf.string, name="examples")
        raw_specs = {k: tf.TensorSpec([None], v.dtype, name=k) for k, v in self._spec.items()}
        # The three signatures call one traced transform and one traced model (two nested functions in the saved
        # graph) instead of tracing the transform three times and the model twice: a third of every export's time.
        # The transform takes what tf.io.parse_example gives for the raw spec (dense [B, ...], sparse [B, <=1]).
        parsed_spec = tf.nest.map_structure(tf.type_spec_from_value, tf.function(
            lambda s: tf.io.parse_example(s, self._spec), autograph=False).get_concrete_function(
                examples).structured_outputs)
        transform = tf.function(self.transform, input_signature=[parsed_spec], autograph=False)
        outputs = tf.function(self._outputs, autograph=False)

        @tf.function(input_signature=[examples], autograph=False)
        def serving_default(serialized):
            return outputs(transform(tf.io.parse_example(serialized, self._spec)))

        @tf.function(input_signature=[raw_specs], autograph=False)
        def serving_raw(raw):
            return outputs(transform({k: _as_parsed(v, self._spec[k]) for k, v in raw.items()}))

        @tf.function(input_signature=[examples], autograph=False)
        def transform_features(serialized):
            return transform(tf.io.parse_example(serialized, self._spec))

        return {"serving_default": serving_default, "serving_raw": serving_raw,
                "transform_features": transform_features}


def read_metadata(saved_model_dir) -> dict | None:
    """`assets.extra/mdl_metadata.json` of a SavedModel (a local path or a URI); None when it has none. Raises
    ValueError if the file is not JSON."""
    path = join(saved_model_dir, "assets.extra", METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None


@contextlib.contextmanager
def _without_optimizers(model):
    """Untrack the model's optimizers while it is saved, as Keras' `include_optimizer=False` does: serving reads no
    optimizer state (warm starts keep theirs in their own checkpoint, `mdl_tf.training.warm_start`), and RMSprop's
    and Adagrad's slots would double the SavedModel's variables and the time to write them."""
    held = {name: getattr(model, name, None) for name in OPTIMIZERS.values()}
    held = {name: opt for name, opt in held.items() if opt is not None}
    try:
        for name in held:
            setattr(model, name, None)
            model._delete_tracking(name)  # None alone would stay tracked under the name
        yield
    finally:
        for name, opt in held.items():
            setattr(model, name, opt)


def _save(path: str, model, transform, cfg: FeatureConfig, metadata, raw_spec, warmup) -> None:
    module = ServingModule(model, transform, cfg, raw_spec)
    # save_traces=False: Keras would otherwise trace every layer's call again for its own loader (`load_model`),
    # which nothing here uses (serving reads the signatures, `rebuild_model` restores the weights by attribute path);
    # measured on a 2-epoch MMoE train: the export took 64 s, 42 s of them in those traces. `model.save` offers the
    # same switch; `tf.saved_model.save` of a module that holds a model only reads it from this scope.
    from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

    with keras_option_scope(save_traces=False), _without_optimizers(model):
        tf.saved_model.save(module, path, signatures=module.signatures())
    meta = {"feature_config": cfg.to_dict(), "tasks": cfg.task_names, "scenarios": cfg.scenario_names,
            "outputs": [output_name(t) for t in cfg.task_names], "hparams": {}, **(metadata or {})}
    # Every hparam the model was built with, not only the ones a user passed: a later change of a default must not
    # rebuild this model differently (`rebuild_model`).
    meta = with_all_hparams(model, meta)
    extra = join(path, "assets.extra")
    tf.io.gfile.makedirs(extra)
    with tf.io.gfile.GFile(join(extra, METADATA_FILE), "w") as f:
        f.write(json.dumps(meta, indent=2))
    if warmup:
        from mdl_tf.serving.warmup import write_warmup_requests

        write_warmup_requests(extra, warmup, model_name=meta.get("model_name", meta.get("model", "mdl")))


def _export_to_uri(path: str, model, transform, cfg, metadata, raw_spec, warmup) -> str:
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
    _save(path, model, transform, cfg, metadata, raw_spec, warmup)
    return path


def export_saved_model(model, transform, cfg: FeatureConfig, path, metadata: dict = None, raw_spec: dict = None,
                       warmup: list | None = None):
    """Save transform + model + signatures to `path` (a local folder: atomically, written aside, then renamed into
    place; a URI such as gs://...: in place, as object stores have no directory rename). Returns `path`.

    warmup: serialized raw tf.Examples; when given, `assets.extra/tf_serving_warmup_requests` replays them through
    serving_default so TF Serving (`--enable_model_warmup`) loads every lazy op before taking traffic.
    """
    if is_uri(path):  # gs://, s3://, ...: no directory rename on object stores; save in place
        return _export_to_uri(str(path), model, transform, cfg, metadata, raw_spec, warmup)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    _save(str(tmp), model, transform, cfg, metadata, raw_spec, warmup)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)
    return path


# -- rebuilding a model from its SavedModel --------------------------------------------------------------------------
def _saved_model_variable_count(saved_model_dir) -> int:
    """How many variables the checkpoint lists as the Keras model's own (`model/variables/<i>`)."""
    prefix = join(saved_model_dir, "variables", "variables")
    return sum(1 for name, _ in tf.train.list_variables(prefix) if name.startswith("model/variables/"))


def rebuild_model(saved_model_dir, meta: dict, build, restore: bool = True):
    """(model, hparams): `build(hparams)` -> a built model, from a SavedModel's metadata, weights restored.

    Exports record every hparam (`export_saved_model`); one from before held only those its user passed. For an MDL
    model of that time `imp_tables` was "own" (the default until MovieLens-1M made it "shared",
    benchmarks/results/movielens1m/FINDINGS.md): when the checkpoint lists another number of model variables than
    the model rebuilt with today's defaults (MDL's are all listed under `model/variables/<i>`), it is rebuilt with
    "own". Without this a partial restore (`expect_partial`) would silently leave the ê_imp tables untrained.
    Raises InvalidSetting naming the metadata file when its model or hparams no longer build."""
    hparams = dict(meta.get("hparams") or {})
    try:
        model = build(hparams)
    except InvalidSetting as e:  # a model, key or value this version does not have
        where = join(saved_model_dir, "assets.extra", METADATA_FILE)
        what = "its model is not registered in" if e.setting == "model" else "its hparams cannot rebuild the model with"
        raise InvalidSetting(e.setting, f"{where}: {what} this version of mdl-tf ({e}); re-export it, or rebuild it "
                                        f"with the version that trained it") from e
    if (restore and meta.get("model") == "mdl" and "imp_tables" not in hparams
            and _saved_model_variable_count(saved_model_dir) != len(model.variables)):
        hparams = {**hparams, "imp_tables": "own"}
        model = build(hparams)
    if restore:
        # The SavedModel's root is ServingModule; its `model` attribute holds the Keras weights (the checkpoint also
        # holds the transform, hence expect_partial).
        prefix = join(saved_model_dir, "variables", "variables")
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    return model, hparams
