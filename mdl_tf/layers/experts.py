"""Building blocks of the multi-task / multi-scenario baselines (MDL_SPEC §10): parallel experts, gates, GateNU,
star-topology linear maps and partitioned normalization. All per-expert / per-domain weights are einsums."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.layers.per_token import per_token_glorot


def active_weights(membership) -> tf.Tensor:
    """[B, N_s] membership -> weights summing to 1 over the active scenarios (uniform for a row with none)."""
    m = tf.cast(membership, tf.float32)
    m = tf.where(tf.reduce_sum(m, -1, keepdims=True) > 0, m, tf.ones_like(m))
    return m / tf.reduce_sum(m, -1, keepdims=True)


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class Experts(tf.keras.layers.Layer):
    """E parallel one-layer ReLU experts on a shared input: x [B, d_in] -> [B, E, units] (kernel [E, d_in, units])."""

    def __init__(self, num_experts: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.num_experts, self.units = int(num_experts), int(units)

    def build(self, input_shape):
        d_in = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", shape=(self.num_experts, d_in, self.units),
                                      initializer=per_token_glorot(self.num_experts, d_in, self.units))
        self.bias = self.add_weight("bias", shape=(self.num_experts, self.units), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return tf.nn.relu(tf.einsum("bd,edh->beh", x, self.kernel) + self.bias)

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "units": self.units}


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class Gates(tf.keras.layers.Layer):
    """G softmax gates over E experts from one input: x [B, d_in] -> [B, G, E] (kernel [d_in, G, E])."""

    def __init__(self, num_gates: int, num_experts: int, **kwargs):
        super().__init__(**kwargs)
        self.num_gates, self.num_experts = int(num_gates), int(num_experts)

    def build(self, input_shape):
        d_in = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", shape=(d_in, self.num_gates, self.num_experts),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight("bias", shape=(self.num_gates, self.num_experts), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return tf.nn.softmax(tf.einsum("bd,dge->bge", x, self.kernel) + self.bias, axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_gates": self.num_gates, "num_experts": self.num_experts}


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class GateNU(tf.keras.layers.Layer):
    """PEPNet's Gate Neural Unit, per token: 2·σ(W₂·ReLU(W₁x)) ∈ (0, 2). x [B, N, d_in] -> [B, N, units]."""

    def __init__(self, units: int, hidden: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.hidden = int(units), hidden

    def build(self, input_shape):
        n, d_in = int(input_shape[-2]), int(input_shape[-1])
        hidden = int(self.hidden or self.units)
        self.w1 = self.add_weight("w1", shape=(n, d_in, hidden), initializer=per_token_glorot(n, d_in, hidden))
        self.b1 = self.add_weight("b1", shape=(n, hidden), initializer="zeros")
        self.w2 = self.add_weight("w2", shape=(n, hidden, self.units), initializer="zeros")  # starts at gate 1
        self.b2 = self.add_weight("b2", shape=(n, self.units), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        h = tf.nn.relu(tf.einsum("bnd,ndh->bnh", x, self.w1) + self.b1)
        return 2.0 * tf.sigmoid(tf.einsum("bnh,nhu->bnu", h, self.w2) + self.b2)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "hidden": self.hidden}


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class StarLinear(tf.keras.layers.Layer):
    """STAR's star-topology FC: for scenario k, y_k = x (W ⊙ W_k) + b + b_k; averaged over the active scenarios.

    x [B, d_in], membership [B, N_s] -> [B, units]. W_k starts at 1, so every scenario starts from the shared W."""

    def __init__(self, num_scenarios: int, units: int, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.num_scenarios, self.units = int(num_scenarios), int(units)
        self.activation = tf.keras.activations.get(activation)

    def build(self, input_shape):
        d_in, k = int(input_shape[-1]), self.num_scenarios
        self.shared = self.add_weight("shared", shape=(d_in, self.units), initializer="glorot_uniform")
        self.shared_bias = self.add_weight("shared_bias", shape=(self.units,), initializer="zeros")
        self.specific = self.add_weight("specific", shape=(k, d_in, self.units), initializer="ones")
        self.specific_bias = self.add_weight("specific_bias", shape=(k, self.units), initializer="zeros")
        super().build(input_shape)

    def call(self, x, membership):
        y = tf.einsum("bd,kdu->bku", x, self.shared[None] * self.specific) + self.shared_bias + self.specific_bias
        w = tf.cast(active_weights(membership), y.dtype)
        return tf.einsum("bk,bku->bu", w, self.activation(y))

    def get_config(self):
        return {**super().get_config(), "num_scenarios": self.num_scenarios, "units": self.units,
                "activation": tf.keras.activations.serialize(self.activation)}


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class PartitionedNormalization(tf.keras.layers.Layer):
    """STAR's partitioned normalization: batch normalization with each scenario's own moving statistics, scale
    γ·γ_k and shift β+β_k. x [B, d], membership [B, N_s] -> [B, d] (a row in several scenarios averages them)."""

    def __init__(self, num_scenarios: int, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.num_scenarios, self.momentum, self.epsilon = int(num_scenarios), float(momentum), float(epsilon)

    def build(self, input_shape):
        d, k = int(input_shape[-1]), self.num_scenarios
        self.gamma = self.add_weight("gamma", shape=(d,), initializer="ones")
        self.beta = self.add_weight("beta", shape=(d,), initializer="zeros")
        self.gamma_k = self.add_weight("gamma_k", shape=(k, d), initializer="ones")
        self.beta_k = self.add_weight("beta_k", shape=(k, d), initializer="zeros")
        self.moving_mean = self.add_weight("moving_mean", shape=(k, d), initializer="zeros", trainable=False)
        self.moving_var = self.add_weight("moving_var", shape=(k, d), initializer="ones", trainable=False)
        super().build(input_shape)

    def call(self, x, membership, training=False):
        w = tf.cast(active_weights(membership), x.dtype)                       # [B, K]
        if training:
            count = tf.reduce_sum(w, 0)[:, None]                                # [K, 1]
            mean = tf.einsum("bk,bd->kd", w, x) / tf.maximum(count, 1e-6)
            var = tf.einsum("bk,bkd->kd", w, tf.square(x[:, None, :] - mean[None])) / tf.maximum(count, 1e-6)
            seen = tf.cast(count > 0, x.dtype)                                   # scenarios absent from the batch
            m = self.momentum
            self.moving_mean.assign(seen * (m * self.moving_mean + (1 - m) * mean) + (1 - seen) * self.moving_mean)
            self.moving_var.assign(seen * (m * self.moving_var + (1 - m) * var) + (1 - seen) * self.moving_var)
            mean = seen * mean + (1 - seen) * self.moving_mean
            var = seen * var + (1 - seen) * self.moving_var
        else:
            mean, var = self.moving_mean, self.moving_var
        z = (x[:, None, :] - mean[None]) * tf.math.rsqrt(var[None] + self.epsilon)           # [B, K, d]
        z = z * (self.gamma * self.gamma_k)[None] + (self.beta + self.beta_k)[None]
        return tf.einsum("bk,bkd->bd", w, z)

    def get_config(self):
        return {**super().get_config(), "num_scenarios": self.num_scenarios, "momentum": self.momentum,
                "epsilon": self.epsilon}
