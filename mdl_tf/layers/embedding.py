"""Embedding tables and sequence encoders.

`SparseEmbedding` marks a table as sparse: the training step gives its variables to the sparse optimizer (Adagrad)
and keeps their gradients as `IndexedSlices` (MDL_SPEC §5.2). Everything else is dense (RMSprop).
"""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.errors import InvalidSetting

SEQ_ENCODERS = ("din", "mean")


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class SparseEmbedding(tf.keras.layers.Embedding):
    """An embedding table trained by the sparse optimizer. ids [...] -> [..., output_dim]."""

    is_sparse_table = True

    def __init__(self, input_dim, output_dim, **kwargs):
        kwargs.setdefault("embeddings_initializer", tf.keras.initializers.RandomNormal(stddev=0.05))
        super().__init__(input_dim, output_dim, **kwargs)


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of values [B, L, e] over positions where mask [B, L] is 1; zeros for an all-masked row."""
    mask = tf.cast(mask, values.dtype)[..., None]
    total = tf.reduce_sum(values * mask, axis=1)
    count = tf.reduce_sum(mask, axis=1)
    return total / tf.maximum(count, tf.ones_like(count))


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class TargetAttentionPooling(tf.keras.layers.Layer):
    """DIN-style target attention over a behaviour sequence.

    sequence [B, L, e], mask [B, L] (1 = real item), target [B, e] -> [B, e].
    score_l = MLP([t, s_l, t - s_l, t * s_l]); weights = softmax over the real items (in fp32); an empty history
    pools to zeros. `mode="mean"` is the masked-mean alternative (`seq_encoder="mean"`).
    """

    def __init__(self, mode: str = "din", hidden_units: int = 32, **kwargs):
        super().__init__(**kwargs)
        if mode not in SEQ_ENCODERS:
            raise InvalidSetting("seq_encoder", f"seq_encoder must be one of {SEQ_ENCODERS}, got {mode!r}")
        self.mode = mode
        self.hidden_units = int(hidden_units)

    def build(self, input_shape):
        if self.mode == "din":
            self.hidden = tf.keras.layers.Dense(self.hidden_units, activation="relu", name="att_hidden")
            self.score = tf.keras.layers.Dense(1, name="att_score")
        super().build(input_shape)

    def call(self, sequence, mask, target):
        if self.mode == "mean":
            return masked_mean(sequence, mask)
        t = tf.broadcast_to(target[:, None, :], tf.shape(sequence))
        scores = self.score(self.hidden(tf.concat([t, sequence, t - sequence, t * sequence], axis=-1)))[..., 0]
        scores = tf.cast(scores, tf.float32)
        valid = tf.cast(mask, tf.bool)
        scores = tf.where(valid, scores, tf.fill(tf.shape(scores), -1e9))
        weights = tf.nn.softmax(scores, axis=-1) * tf.cast(valid, tf.float32)
        return tf.einsum("bl,ble->be", tf.cast(weights, sequence.dtype), sequence)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "hidden_units": self.hidden_units}
