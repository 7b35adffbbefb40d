"""The shared model contract and training step of every model in mdl_tf (MDL and the baselines).

A model maps the transformed feature dict (see `mdl_tf.data.transform`) to logits [B, N_t] in `compute_logits`;
`call` returns {task: probability}. Training uses one GradientTape and two optimizers: RMSprop for dense weights and
Adagrad for the `SparseEmbedding` tables, whose gradients stay `IndexedSlices` (MDL_SPEC §5.2). Under the
`mixed_float16` policy the loss is scaled dynamically and a step with non-finite gradients is skipped.
"""
from __future__ import annotations

import collections.abc
import contextlib
import math

import numpy as np
import tensorflow as tf

from mdl_tf.config import FeatureConfig, from_dict
from mdl_tf.errors import InvalidSetting
from mdl_tf.training.settings import check_optimizer_settings, finite_number
from mdl_tf.data.transform import FIRST_ID, OOV_ID, PAD_ID, SCENARIO_INDEX, SCENARIO_MASK
from mdl_tf.training.losses import LOSS_NORMS, masked_multitask_loss, per_task_bce
from mdl_tf.training.metrics import DefinedAUC


# RMSprop for dense weights. MDL_SPEC §5.2 starts at 1e-2 and falls back to 1e-3 "if attention diverges": at 1e-2
# the loss blew up to ~375 in the first epoch on the synthetic data (d=128), so 1e-3 is the default everywhere.
DEFAULT_DENSE_LR = 1e-3
DEFAULT_SPARSE_LR = 0.05  # Adagrad for embedding tables
# MDL_SPEC §5.2 starts Adagrad's accumulator at 0.1, a value from sum-over-batch losses. Our loss is a mean over the
# batch, so an id's gradient is ~1/B of that: with 0.1 in the denominator an embedding row moved ~1e-5 per step at
# batch 4096 and the tables barely trained (MovieLens-1M: eval click AUC 0.725 after two epochs). A small
# accumulator makes Adagrad's first steps scale-free (≈ lr · sign(g)), whatever the batch size.
DEFAULT_SPARSE_ACCUMULATOR = 1e-6
# compile()'s two optimizers: role -> the model attribute holding it (warm starts save and restore them by role,
# the export leaves them out of the SavedModel).
OPTIMIZERS = {"dense": "optimizer", "sparse": "sparse_optimizer"}
# Dense weights that `weight_decay` leaves alone, matched on the last component of the variable's name (anchored, so
# a schema feature called "beta_..." does not exempt its kernels; "/part_N" is a parameter-server shard): biases
# (Keras' "bias", the per-token FFNs' b1/b2, STAR's *_bias), normalisation parameters (gamma/beta, STAR's
# gamma_k/beta_k), STAR's "specific" (a multiplicative gate: its neutral value is 1, not 0) and the baselines'
# scenario_embedding (a lookup table kept among the dense weights).
NOT_DECAYED = r"(^|/)(\w*bias|b\d+|gamma(_k)?|beta(_k)?|specific|scenario_embedding)(/part_\d+)?:\d+$"


@contextlib.contextmanager
def precision_policy(name: str | None):
    """Build layers under a dtype policy ("mixed_float16", "mixed_bfloat16") and restore the previous one."""
    if not name or name == "float32":
        yield
        return
    old = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(old)


def dummy_features(cfg: FeatureConfig, batch: int = 2) -> dict:
    """A batch of valid transformed features (all ids = OOV, scenario 0), used to build a model's weights."""
    out = {}
    for f in cfg.features:
        if f.kind == "numeric":
            out[f.name] = tf.zeros([batch], tf.float32)
        elif f.kind == "categorical":
            out[f.name] = tf.ones([batch], tf.int64)
        else:
            out[f.name] = tf.fill([batch, f.max_len], tf.constant(PAD_ID, tf.int64))
    out[SCENARIO_MASK] = tf.one_hot(tf.zeros([batch], tf.int64), cfg.num_scenarios)
    out[SCENARIO_INDEX] = tf.zeros([batch], tf.int64)
    return out


# Keras traces train/test/predict steps through AutoGraph, which re-parses the Python source of every layer's call
# into a converted copy: a large share of the tracing time of a run, paid again for every model a process builds.
# Our steps and layers never branch or loop in Python on tensor values (tf.cond, einsum and tf.where instead), so
# they trace as plain Python: the same graph, without the conversion. A layer that needs AutoGraph fails loudly at
# trace time ("using a tf.Tensor as a Python bool is not allowed").
_plain_python = tf.autograph.experimental.do_not_convert


class _DynamicLossScale(tf.Module):
    """Loss scaling for float16: x2 after `period` finite steps, /2 on a non-finite step (which is skipped)."""

    def __init__(self, initial: float = 2.0 ** 15, period: int = 2000):
        super().__init__(name="loss_scale")
        self.scale = tf.Variable(initial, trainable=False, dtype=tf.float32, name="scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="good_steps")
        self.period = period

    def update(self, finite: tf.Tensor) -> None:
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.period)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.good_steps.assign(tf.where(finite, tf.where(grow, tf.zeros_like(self.good_steps),
                                                         self.good_steps + 1), tf.zeros_like(self.good_steps)))


def _map_grad(g, fn):
    if g is None:
        return None
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(fn(g.values), g.indices, g.dense_shape)
    return fn(g)


def _all_finite(grads) -> tf.Tensor:
    checks = [tf.reduce_all(tf.math.is_finite(g.values if isinstance(g, tf.IndexedSlices) else g))
              for g in grads if g is not None]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def with_all_hparams(model, metadata: dict) -> dict:
    """`metadata` ({"hparams": the ones a user passed, ...}) with "hparams" completed by every hparam `model` was
    built with, the passed ones winning. Exports and warm-start manifests record this, so a later change of a
    model's default rebuilds the saved model as it was trained, and is seen by a warm start as another
    architecture. Metadata without "hparams" (or a model without them) is returned unchanged (a copy)."""
    if "hparams" not in metadata or not getattr(model, "hparams", None):
        return dict(metadata)
    return {**metadata, "hparams": {**_plain(model.hparams), **metadata["hparams"]}}


def _plain(value):
    """Plain dicts and lists of a value Keras' attribute tracking wrapped (its dict and list wrappers are not JSON)."""
    if isinstance(value, collections.abc.Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MultiDistributionModel(tf.keras.Model):
    """Base class: transformed features -> logits [B, N_t]; {task: probability} from `call`."""

    model_name = "base"
    # The hyperparameter grid `mdl-tf bench movielens1m` tunes on the eval split: every combination is one trial
    # (4 here; a model that overrides it must keep the same number of trials, so every model gets the same tuning
    # budget). Learning rates go to the optimizers (RMSprop dense, Adagrad sparse), the rest to the constructor;
    # num_layers trades depth for width at the fixed dense-parameter budget.
    TUNING_GRID = {"dense_lr": (1e-3, 3e-4), "num_layers": (1, 2)}
    # Bump when a change to a model's code changes what it learns (not its flags: their defaults are fingerprinted
    # already): the benchmarks' run keys then change, so the runs recorded before the change are trained again.
    revision = 1

    def __init__(self, feature_config, vocab_sizes: dict, task_weights=None, loss_norm: str = "batch", **kwargs):
        super().__init__(**kwargs)
        self.cfg = from_dict(feature_config, "model config") if isinstance(feature_config, dict) else feature_config
        self.vocab_sizes = {k: int(v) for k, v in vocab_sizes.items()}
        self.task_names = self.cfg.task_names
        if loss_norm not in LOSS_NORMS:
            raise InvalidSetting("loss_norm", f"loss_norm must be one of {LOSS_NORMS}, got {loss_norm!r}")
        if task_weights is not None:
            if not isinstance(task_weights, collections.abc.Mapping) and (
                    isinstance(task_weights, str) or not isinstance(task_weights, collections.abc.Sequence)):
                raise InvalidSetting("task_weights", f"task_weights must be {{task: weight}} or one weight per task "
                                                     f"{self.task_names}, got {task_weights!r}")
            if isinstance(task_weights, collections.abc.Mapping):
                unknown = set(task_weights) - set(self.task_names)
                if unknown:
                    raise InvalidSetting("task_weights", f"task_weights names unknown task(s) {sorted(unknown)}; "
                                                         f"tasks are {self.task_names}")
                task_weights = [task_weights.get(t, 1.0) for t in self.task_names]
            if len(task_weights) != len(self.task_names):
                raise InvalidSetting("task_weights", f"task_weights has {len(task_weights)} entries for "
                                                     f"{len(self.task_names)} tasks")
            bad = [w for w in task_weights if finite_number(w) is None or finite_number(w) < 0]
            if bad:  # a negative weight would maximise that task's loss without any error
                raise InvalidSetting("task_weights", f"task_weights must be finite numbers >= 0, got {bad[0]!r}")
            task_weights = [float(w) for w in task_weights]
        self.task_weights = task_weights
        self.loss_norm = loss_norm
        self._loss_scale = None
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        # Every task owns its metric state: its own AUC and its own masked-BCE mean.
        self.task_auc = [DefinedAUC(num_thresholds=500, name=f"auc_{t}") for t in self.task_names]
        self.task_bce = [tf.keras.metrics.Mean(name=f"bce_{t}") for t in self.task_names]

    def build_feature_tokens(self, d_model: int, embedding_dim=None, seq_encoder: str = "din",
                             tokenizer: str = "group", feature_tokens: int | None = None,
                             attn_heads: int | None = None) -> int:
        """Create `self.embedder` and `self.feature_tokenizer` (T_f, MDL_SPEC §3.1), shared by MDL and every
        baseline; returns N_f (the token groups, or `feature_tokens` slices with tokenizer="slice"). d must be
        divisible by N_f (RankMixer's token mixing cuts tokens into N_f slices)."""
        from mdl_tf.layers import FeatureEmbedder, FeatureTokenizer

        cfg = self.cfg
        self.embedder = FeatureEmbedder(cfg, self.vocab_sizes, embedding_dim or cfg.embedding_dim,
                                        seq_encoder=seq_encoder, name="embedder")
        widths = {f.name: self.embedder.feature_width(f.name) for f in cfg.features}
        self.feature_tokenizer = FeatureTokenizer(cfg, d_model, widths, mode=tokenizer, num_tokens=feature_tokens,
                                                  name="feature_tokenizer")
        n_f = self.feature_tokenizer.num_tokens
        # attn_heads (MDL): the attention splits d into heads too; one check names both and the widths that work.
        step = math.lcm(n_f, attn_heads or 1)
        if d_model % step:
            lower, upper = d_model // step * step, (d_model // step + 1) * step
            heads = f" and by attn_heads={attn_heads}" if step != n_f else ""
            raise InvalidSetting("d_model", f"d_model={d_model} must be divisible by N_f={n_f} (the feature tokens "
                                 f"of '{cfg.name}'){heads}: try {f'{lower} or ' if lower else ''}{upper}; "
                                 f"TokenMixing splits every token into N_f slices")
        return n_f

    # -- to implement --------------------------------------------------------------------------------------------
    def compute_logits(self, features: dict, training=False) -> tf.Tensor:
        raise NotImplementedError

    # -- model contract ------------------------------------------------------------------------------------------
    def call(self, features, training=False):
        logits = tf.cast(self.compute_logits(features, training=training), tf.float32)
        # One sigmoid per task column: Eigen's vectorised sigmoid over [B, N_t] can round an element differently by
        # its place in a SIMD packet, so an added task would move the old tasks' probabilities in the last bit
        # (onboarding promises bit-identical outputs; measured: 3e-8 on "click" after `task add`).
        return {t: tf.sigmoid(logits[:, i]) for i, t in enumerate(self.task_names)}

    def build_with_dummy_batch(self) -> "MultiDistributionModel":
        self(dummy_features(self.cfg), training=False)
        return self

    def variable_groups(self):
        """(dense, sparse) trainable variables; sparse = the variables of every SparseEmbedding table."""
        sparse_refs = set()
        for module in self._flatten_layers(include_self=False, recursive=True):
            if getattr(module, "is_sparse_table", False):
                sparse_refs.update(v.ref() for v in module.trainable_variables)
        dense = [v for v in self.trainable_variables if v.ref() not in sparse_refs]
        sparse = [v for v in self.trainable_variables if v.ref() in sparse_refs]
        return dense, sparse

    def model_weights(self) -> list:
        """The model's own weights, without the metric state Keras also lists in `weights` (under a distribution
        strategy, metric variables are per-replica and reading them is a cross-worker reduction)."""
        metric_refs = {v.ref() for m in self.metrics for v in m.variables}
        return [v for v in self.weights if v.ref() not in metric_refs]

    def param_counts(self) -> dict:
        dense, sparse = self.variable_groups()
        return {"dense": int(sum(np.prod(v.shape) for v in dense)),
                "embedding": int(sum(np.prod(v.shape) for v in sparse))}

    # -- training ------------------------------------------------------------------------------------------------
    def compile(self, dense_lr: float = DEFAULT_DENSE_LR, sparse_lr: float = DEFAULT_SPARSE_LR,
                dense_optimizer=None, sparse_optimizer=None,
                sparse_accumulator: float = DEFAULT_SPARSE_ACCUMULATOR, oov_rate: float = 0.0,
                weight_decay: float = 0.0, warmup_steps: int = 0, **kwargs):
        """RMSprop(dense_lr) for dense weights, Adagrad(sparse_lr, initial accumulator `sparse_accumulator`) for the
        embedding tables (MDL_SPEC §5.2; pass sparse_accumulator=0.1 for the spec's starting value).

        `weight_decay` (not in the spec; 0 = off): decoupled weight decay of the dense weight matrices (Loshchilov &
        Hutter, "Decoupled Weight Decay Regularization"): before each update every decayed weight w becomes
        w - dense_lr * weight_decay * w, so the per-step shrink is the product (1e-3 * 0.1 = 1e-4 of w). Biases and
        normalisation scales/offsets, multiplicative gates and embedding tables are not (`NOT_DECAYED`). Raises
        ValueError if negative, or if set together with `dense_optimizer`.

        `warmup_steps` (not in the spec; 0 = off): the dense learning rate rises linearly from dense_lr / warmup_steps
        at the first step to dense_lr at step `warmup_steps`, then stays there (Keras' CosineDecay with alpha=1, so
        no decay). The schedule reads the optimizer's step counter. A warm start restores that counter when the base
        model trained under the default or mirrored strategy (its warm-start state holds the optimizers), so a model
        warm-started past `warmup_steps` trains at dense_lr from its first step; a base trained under the
        multi-worker or parameter-server strategy saves weights only, so the warm-up runs again. Raises ValueError if
        not a whole number, if negative, or if set together with `dense_optimizer`.

        `oov_rate` (training only): each categorical id of a training row is replaced by the OOV id with this
        probability, so the OOV row of every table learns what an unknown user or item looks like. Without it the
        OOV row never occurs in training when every training id is in the vocabulary (min_frequency 1), and cold
        rows at serving time read a random vector.

        Raises InvalidSetting (a ValueError) for a value out of range (`check_optimizer_settings`)."""
        check_optimizer_settings(dense_lr=dense_lr, sparse_lr=sparse_lr, sparse_accumulator=sparse_accumulator,
                                 oov_rate=oov_rate, weight_decay=weight_decay, warmup_steps=warmup_steps,
                                 allow_schedules=True)
        if weight_decay and dense_optimizer is not None:
            raise ValueError("weight_decay configures the built-in RMSprop; with your own dense_optimizer set the "
                             "decay on that optimizer instead")
        if warmup_steps and dense_optimizer is not None:
            raise ValueError("warmup_steps configures the built-in RMSprop; with your own dense_optimizer give it a "
                             "learning-rate schedule instead")
        self.oov_rate = float(oov_rate)
        lr = dense_lr
        if warmup_steps:
            lr = tf.keras.optimizers.schedules.CosineDecay(dense_lr / warmup_steps, decay_steps=1, alpha=1.0,
                                                           warmup_target=dense_lr, warmup_steps=int(warmup_steps))
        dense_opt = dense_optimizer or tf.keras.optimizers.RMSprop(lr, rho=0.9, momentum=0.0, epsilon=1e-7,
                                                                   weight_decay=weight_decay or None)
        if weight_decay:
            dense_opt.exclude_from_weight_decay(var_names=[NOT_DECAYED])
        self.sparse_optimizer = sparse_optimizer or tf.keras.optimizers.Adagrad(
            sparse_lr, initial_accumulator_value=sparse_accumulator)
        if self.compute_dtype == "float16" and self._loss_scale is None:
            self._loss_scale = _DynamicLossScale()
        super().compile(optimizer=dense_opt, **kwargs)

    def build_optimizers(self) -> None:
        """Create both optimizers' slot variables now (dense: RMSprop, sparse: Adagrad), over the lists the train step
        passes. tf.keras creates them on the first `apply_gradients`, inside the first trace of the train step, and a
        tf.function that created variables while tracing is traced a second time: every `fit` would build the forward
        and backward graph twice (~3 s for a small MDL). A group with no trainable variable (onboarding trains one
        token) is left unbuilt, as the train step never applies gradients to it. No-op when already built."""
        dense, sparse = self.variable_groups()
        for role, var_list in (("dense", dense), ("sparse", sparse)):
            optimizer = getattr(self, OPTIMIZERS[role], None)
            if optimizer is not None and var_list:
                optimizer.build(var_list)

    def make_train_function(self, force=False):
        if self.built and (self.train_function is None or force):  # fit and train_on_batch, in the strategy scope
            self.build_optimizers()
        return super().make_train_function(force)

    @property
    def metrics(self):
        return [self.loss_tracker, *self.task_auc, *self.task_bce]

    def _loss(self, labels, logits, mask):
        return masked_multitask_loss(labels, logits, mask, self.task_weights, self.loss_norm)

    def _update_metrics(self, loss, labels, logits, mask):
        self.loss_tracker.update_state(loss)
        probs = tf.sigmoid(tf.cast(logits, tf.float32))
        bce = per_task_bce(labels, logits, mask)
        for i in range(len(self.task_names)):
            w = mask[:, i]
            self.task_auc[i].update_state(labels[:, i], probs[:, i], sample_weight=w)
            self.task_bce[i].update_state(bce[:, i], sample_weight=w)
        return {m.name: m.result() for m in self.metrics}

    def _drop_ids(self, features: dict) -> dict:
        """Categorical ids [B] -> the OOV id with probability `oov_rate` each (padding and OOV ids stay)."""
        if not getattr(self, "oov_rate", 0.0):
            return features
        out = dict(features)
        for f in self.cfg.features_of_kind("categorical"):
            ids = features[f.name]
            drop = tf.random.uniform(tf.shape(ids)) < self.oov_rate
            out[f.name] = tf.where(drop & (ids >= FIRST_ID), tf.constant(OOV_ID, ids.dtype), ids)
        return out

    @_plain_python
    def train_step(self, data):
        features, targets = data
        features = self._drop_ids(features)
        labels, mask = targets["labels"], targets["label_mask"]
        dense_vars, sparse_vars = self.variable_groups()
        with tf.GradientTape() as tape:
            logits = self.compute_logits(features, training=True)
            loss = self._loss(labels, logits, mask)
            objective = loss * self._loss_scale.scale if self._loss_scale is not None else loss
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:  # the optimizers sum gradients over replicas; the loss is a mean over the global batch
                objective = objective / replicas
        grads = tape.gradient(objective, dense_vars + sparse_vars)
        if self._loss_scale is not None:
            inv = 1.0 / self._loss_scale.scale
            grads = [_map_grad(g, lambda x: x * tf.cast(inv, x.dtype)) for g in grads]
        if replicas > 1:
            # Synchronous replicas all-reduce dense tensors; IndexedSlices would need all-gathers, which pile up
            # threads on CPU collectives (TF 2.16) until the process dies. Single-replica training keeps them sparse.
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        dense_pairs = [(g, v) for g, v in zip(grads[: len(dense_vars)], dense_vars) if g is not None]
        sparse_pairs = [(g, v) for g, v in zip(grads[len(dense_vars):], sparse_vars) if g is not None]

        def apply():
            if dense_pairs:
                self.optimizer.apply_gradients(dense_pairs)
            if sparse_pairs:
                self.sparse_optimizer.apply_gradients(sparse_pairs)
            return tf.constant(True)

        if self._loss_scale is None:
            apply()
        else:
            finite = _all_finite(grads)
            tf.cond(finite, apply, lambda: tf.constant(False))
            self._loss_scale.update(finite)
        return self._update_metrics(loss, labels, logits, mask)

    @_plain_python
    def test_step(self, data):
        features, targets = data
        labels, mask = targets["labels"], targets["label_mask"]
        logits = self.compute_logits(features, training=False)
        return self._update_metrics(self._loss(labels, logits, mask), labels, logits, mask)

    @_plain_python
    def predict_step(self, data):
        features = data[0] if isinstance(data, tuple) else data
        return self(features, training=False)
