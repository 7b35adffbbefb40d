"""Masked multi-task BCE (MDL_SPEC §5.1)."""
from __future__ import annotations

import tensorflow as tf

LOSS_NORMS = ("batch", "per_task")


def per_task_bce(labels: tf.Tensor, logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Masked BCE-with-logits per element, [B, N_t] float32; a masked label contributes an exact 0."""
    logits = tf.cast(logits, tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32), logits=logits)
    mask = tf.cast(mask, tf.float32)
    # where() rather than a product: a masked entry gives zero loss and zero gradient even if the logit is inf.
    return tf.where(mask > 0, bce * mask, tf.zeros_like(bce))


def masked_multitask_loss(labels, logits, mask, task_weights=None, norm: str = "batch") -> tf.Tensor:
    """L = (1/B) Σ_i Σ_n w_n m_in BCE(y_in, z_in)  ("batch"), or each task's sum / max(Σ_i m_in, 1) ("per_task")."""
    if norm not in LOSS_NORMS:
        raise ValueError(f"loss_norm must be one of {LOSS_NORMS}, got {norm!r}")
    per = per_task_bce(labels, logits, mask)
    if norm == "batch":
        per_task = tf.reduce_sum(per, axis=0) / tf.cast(tf.shape(per)[0], tf.float32)
    else:
        per_task = tf.reduce_sum(per, axis=0) / tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32), axis=0), 1.0)
    if task_weights is not None:
        per_task = per_task * tf.constant(task_weights, tf.float32)
    return tf.reduce_sum(per_task)
