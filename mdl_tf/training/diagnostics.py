"""What a trained model's internals look like (issue 16's diagnostics), written to metrics.json under "diagnostics".

- learning curves: the training and eval loss / per-task AUC after every epoch (Keras' history);
- attention entropy (MDL): how selective the scenario and task tokens' attention over the feature tokens is;
- token norms (MDL): the RMS of each token stream after the tokenizers and after every layer;
- gradient norms: the L2 norm of the loss gradient of each top-level component, on one eval batch (no update).

All read one batch of eval rows (2,048 by default), so they cost seconds beside a training run.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mdl_tf.training.data import make_dataset


def finite_or_none(value) -> float | None:
    """A metric value for JSON: the float, or None where it is undefined (NaN: an AUC over one class)."""
    value = float(value)
    return value if np.isfinite(value) else None


def learning_curves(history: dict) -> dict:
    """Keras' `History.history` -> {"train": {metric: [per epoch]}, "eval": {metric: [per epoch]}} (val_ stripped;
    an undefined value is None)."""
    curves = {"train": {}, "eval": {}}
    for name, values in history.items():
        split, metric = ("eval", name[4:]) if name.startswith("val_") else ("train", name)
        curves[split][metric] = [None if finite_or_none(v) is None else round(float(v), 6) for v in values]
    return curves


def eval_batch(frame, cfg, transform, rows: int = 2048):
    """(features, targets) of the first `rows` rows of a validated frame, as one batch."""
    return next(iter(make_dataset(frame.iloc[:rows], cfg, transform, rows)))


def _entropy(w: tf.Tensor) -> float:
    """Mean entropy (nats) of attention rows w [..., N_f]."""
    w = tf.cast(w, tf.float32)
    return float(tf.reduce_mean(-tf.reduce_sum(w * tf.math.log(w + 1e-12), axis=-1)))


def attention_entropy(model, features) -> list:
    """Per layer: {"layer", "scenario", "task": mean entropy (nats) of those tokens' attention over the N_f feature
    tokens, "uniform": ln N_f}. Lower = more selective prompts; equal to "uniform" = the tokens do not choose."""
    out = []
    for layer, maps in enumerate(model.attention_maps(features)):
        entry = {"layer": layer + 1}
        for kind, w in maps.items():  # w [B, heads, tokens, N_f]
            entry[kind] = _entropy(w)
            entry["uniform"] = float(np.log(int(w.shape[-1])))
        out.append(entry)
    return out


def token_norms(model, features) -> list:
    """Per depth (0 = the tokenizers' output, l = after layer l): {"layer", "feature", "scenario", "task": the mean
    over rows and tokens of each token's RMS over d}; a stream the model does not have is left out."""
    out = []
    for layer, states in enumerate(model.token_states(features)):
        entry = {"layer": layer}
        for kind, t in states.items():
            if t.shape[1]:
                t = tf.cast(t, tf.float32)
                entry[kind] = float(tf.reduce_mean(tf.sqrt(tf.reduce_mean(tf.square(t), axis=-1))))
        out.append(entry)
    return out


def gradient_norms(model, features, targets) -> dict:
    """{component: L2 norm of d loss / d its trainable variables} on one batch, components = the model's top-level
    layers (for MDL: embedder, feature_tokenizer, scenario_tokenizer, task_tokenizer, mdl_block_l, task_heads).
    The norm of a sparse table's gradient counts only the rows the batch touched. No variable is changed."""
    components = [(layer.name, layer.trainable_variables) for layer in model._flatten_layers(include_self=False,
                                                                                             recursive=False)]
    components = [(name, variables) for name, variables in components if variables]
    flat = [v for _, variables in components for v in variables]
    with tf.GradientTape() as tape:
        logits = model.compute_logits(features, training=False)
        loss = model._loss(targets["labels"], logits, targets["label_mask"])
    grads = tape.gradient(loss, flat)
    out, i = {}, 0
    for name, variables in components:
        squares = 0.0
        for g in grads[i: i + len(variables)]:
            if g is not None:
                values = g.values if isinstance(g, tf.IndexedSlices) else g
                squares += float(tf.reduce_sum(tf.square(tf.cast(values, tf.float32))))
        out[name] = round(squares ** 0.5, 8)
        i += len(variables)
    return out


def diagnose(model, features, targets, history: dict) -> dict:
    """The "diagnostics" entry of metrics.json for a trained model, on one batch of eval rows (`eval_batch`)."""
    out = {"learning_curves": learning_curves(history), "gradient_norms": gradient_norms(model, features, targets)}
    if hasattr(model, "token_states"):
        out["token_norms"] = token_norms(model, features)
    return out


__all__ = ["attention_entropy", "diagnose", "eval_batch", "gradient_norms", "learning_curves", "token_norms"]
