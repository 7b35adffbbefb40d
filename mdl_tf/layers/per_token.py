"""Per-token linear maps and FFNs: every token has its own weights, applied in one einsum (no loop over tokens)."""
from __future__ import annotations

import math

import tensorflow as tf


KERNEL_INITS = ("glorot", "small", "zeros")
SMALL_INIT_SCALE = 0.1  # "small": Glorot-uniform limits times this


def per_token_glorot(num_tokens: int, fan_in: int, fan_out: int, seed=None, scale: float = 1.0):
    """Glorot-uniform (limits times `scale`) for a [N, fan_in, fan_out] kernel, with fans of one token's matrix
    (Keras would count N in)."""
    limit = scale * math.sqrt(6.0 / (fan_in + fan_out))
    return tf.keras.initializers.RandomUniform(-limit, limit, seed=seed)


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class PerTokenDense(tf.keras.layers.Layer):
    """y[:, n] = x[:, n] @ W[n] + b[n].

    Input  [B, N, d_in]; output [B, N, units]. Kernel [N, d_in, units], bias [N, units]. The kernel starts
    per-token Glorot-uniform, 0.1 × that with `kernel_init="small"`, or all zeros with `"zeros"` (output heads).
    """

    def __init__(self, units: int, use_bias: bool = True, activation=None, kernel_init: str = "glorot", **kwargs):
        super().__init__(**kwargs)
        if kernel_init not in KERNEL_INITS:
            raise ValueError(f"kernel_init must be one of {KERNEL_INITS}, got {kernel_init!r}")
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.activation = tf.keras.activations.get(activation)
        self.kernel_init = kernel_init

    def build(self, input_shape):
        num_tokens, d_in = int(input_shape[-2]), int(input_shape[-1])
        scale = {"glorot": 1.0, "small": SMALL_INIT_SCALE}.get(self.kernel_init)
        init = "zeros" if scale is None else per_token_glorot(num_tokens, d_in, self.units, scale=scale)
        self.kernel = self.add_weight("kernel", shape=(num_tokens, d_in, self.units), initializer=init)
        self.bias = (self.add_weight("bias", shape=(num_tokens, self.units), initializer="zeros")
                     if self.use_bias else None)
        super().build(input_shape)

    def call(self, x):
        y = tf.einsum("bnd,ndh->bnh", x, self.kernel)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias,
                "activation": tf.keras.activations.serialize(self.activation), "kernel_init": self.kernel_init}


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class PerTokenFFN(tf.keras.layers.Layer):
    """Per-token MLP: v_n = W2[n] · Dropout(GELU(W1[n] x_n + b1[n])) + b2[n]  (RankMixer's PFFN).

    Input [B, N, d]; output [B, N, output_dim or d]. `num_layers=1` gives a single per-token linear map.
    `dropout` (default 0) drops hidden units during training only (`call(x, training=True)`); with one layer it
    drops the input. Raises ValueError for num_layers outside {1, 2} or dropout outside [0, 1).
    """

    def __init__(self, hidden_dim: int, output_dim: int | None = None, num_layers: int = 2,
                 activation="gelu", outer_init: str = "glorot", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if num_layers not in (1, 2):
            raise ValueError(f"PerTokenFFN num_layers must be 1 or 2, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"PerTokenFFN dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = output_dim
        self.num_layers = num_layers
        self.activation = activation
        self.outer_init = outer_init

    def build(self, input_shape):
        out = int(self.output_dim or input_shape[-1])
        if self.num_layers == 2:
            self.inner = PerTokenDense(self.hidden_dim, activation=self.activation, name="inner")
        self.outer = PerTokenDense(out, kernel_init=self.outer_init, name="outer")
        super().build(input_shape)

    @property
    def first(self) -> PerTokenDense:
        """The layer that reads the input (`inner`, or `outer` with one layer): kernel [N, d_in, h], bias [N, h]."""
        return self.inner if self.num_layers == 2 else self.outer

    def call(self, x, training=None):
        if self.num_layers == 2:
            x = self.inner(x)
        if self.dropout and training:
            x = tf.nn.dropout(x, self.dropout)
        return self.outer(x)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "output_dim": self.output_dim,
                "num_layers": self.num_layers, "activation": self.activation, "outer_init": self.outer_init,
                "dropout": self.dropout}
