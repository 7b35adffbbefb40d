"""Per-task output heads (MDL_SPEC §4.6): one head per task token."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.layers.per_token import PerTokenDense, PerTokenFFN

HEADS = ("linear", "mlp")


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class TaskHeads(tf.keras.layers.Layer):
    """Task tokens [B, N_t, d] -> logits [B, N_t] (float32). "linear": z_n = T[:, n] W_n + b_n with W [N_t, d, 1];
    "mlp": a per-task d -> d -> 1 GELU MLP."""

    def __init__(self, kind: str = "linear", **kwargs):
        super().__init__(**kwargs)
        if kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
        self.kind = kind

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.proj = (PerTokenDense(1, name="linear") if self.kind == "linear"
                     else PerTokenFFN(d, output_dim=1, name="mlp"))
        super().build(input_shape)

    def call(self, task_tokens):
        return tf.cast(self.proj(task_tokens)[..., 0], tf.float32)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}
