"""Per-task output heads (MDL_SPEC §4.6): one head per task token."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.errors import InvalidSetting
from mdl_tf.layers.per_token import PerTokenDense, PerTokenFFN

HEADS = ("linear", "mlp")
HEAD_INITS = ("zeros", "small", "glorot")


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class TaskHeads(tf.keras.layers.Layer):
    """Task tokens [B, N_t, d] -> logits [B, N_t] (float32). "linear": z_n = T[:, n] W_n + b_n with W [N_t, d, 1];
    "mlp": a per-task d -> d -> 1 GELU MLP.

    `init="zeros"` (MDL's default) starts the output weights at zero, so an untrained model predicts the bias for
    every row, as the baselines' towers nearly do. The task tokens read an un-normalised residual stream whose RMS
    grows with depth: with Glorot output weights ("glorot", the earlier behaviour) the initial logits had a std of
    1.2-2.2 across rows against 0.05-0.3 for the baselines, and the first epoch went to undoing them
    (../shared/design/MDL_MOVIELENS_REVIEW.md §2). The weights still get gradients: d logit / d W = T_t ≠ 0.
    """

    def __init__(self, kind: str = "linear", init: str = "zeros", **kwargs):
        super().__init__(**kwargs)
        if kind not in HEADS:
            raise InvalidSetting("head", f"head must be one of {HEADS}, got {kind!r}")
        if init not in HEAD_INITS:
            raise InvalidSetting("head_init", f"head_init must be one of {HEAD_INITS}, got {init!r}")
        self.kind = kind
        self.init = init

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.proj = (PerTokenDense(1, kernel_init=self.init, name="linear") if self.kind == "linear"
                     else PerTokenFFN(d, output_dim=1, outer_init=self.init, name="mlp"))
        super().build(input_shape)

    def call(self, task_tokens):
        return tf.cast(self.proj(task_tokens)[..., 0], tf.float32)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "init": self.init}


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class ScenarioTowers(tf.keras.layers.Layer):
    """One d -> d GELU MLP per scenario, shared across tasks, averaged over the instance's scenarios.

    tokens [B, N_t, d], membership [B, N_s] -> [B, N_t, d]. A row with no known scenario averages all towers.
    Used by the "w/o scenario token" ablation of MDL (MDL_SPEC §11) in place of scenario tokens.
    """

    def __init__(self, num_scenarios: int, d_model: int, **kwargs):
        super().__init__(**kwargs)
        self.num_scenarios, self.d_model = int(num_scenarios), int(d_model)

    def build(self, input_shape):
        from mdl_tf.layers.per_token import per_token_glorot

        k, d = self.num_scenarios, self.d_model
        # One initializer instance per weight: a reused unseeded Keras initializer returns identical values.
        self.w1 = self.add_weight("w1", shape=(k, d, d), initializer=per_token_glorot(k, d, d))
        self.b1 = self.add_weight("b1", shape=(k, d), initializer="zeros")
        self.w2 = self.add_weight("w2", shape=(k, d, d), initializer=per_token_glorot(k, d, d))
        self.b2 = self.add_weight("b2", shape=(k, d), initializer="zeros")
        super().build(input_shape)

    def call(self, tokens, membership):
        h = tf.nn.gelu(tf.einsum("bnd,kde->bkne", tokens, self.w1) + self.b1[None, :, None, :])
        h = tf.einsum("bkne,kef->bknf", h, self.w2) + self.b2[None, :, None, :]
        m = tf.cast(membership, h.dtype)
        m = tf.where(tf.reduce_sum(m, -1, keepdims=True) > 0, m, tf.ones_like(m))
        return tf.einsum("bk,bknf->bnf", m / tf.reduce_sum(m, -1, keepdims=True), h)

    def get_config(self):
        return {**super().get_config(), "num_scenarios": self.num_scenarios, "d_model": self.d_model}
