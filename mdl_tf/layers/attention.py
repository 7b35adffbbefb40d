"""Domain-aware attention (MDL_SPEC §4.3): domain tokens query the feature tokens."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.errors import InvalidSetting
from mdl_tf.layers.per_token import PerTokenDense


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class DomainAwareAttention(tf.keras.layers.Layer):
    """Cross multi-head attention with per-token projections.

        DAA(T_d, T_f) = softmax(Q Kᵀ / √d_h) V,  Q_i = T_d[:, i] W_Q⁽ⁱ⁾,  K_j = T_f[:, j] W_K⁽ʲ⁾,  V_j = T_f[:, j] W_V⁽ʲ⁾

    queries T_d [B, N_d, d], features T_f [B, N_f, d] -> [B, N_d, d] (heads concatenated), and with
    `return_attention=True` also the weights [B, A, N_d, N_f]. The softmax runs over the N_f feature tokens, in
    fp32 under mixed precision. Domain tokens never attend to each other and features never read domain tokens.

    project_kv=False builds no K/V weights: the caller passes `kv=(K, V)` from another attention layer
    (`share_kv=True`, one K/V per layer for the scenario and task paths).
    """

    def __init__(self, d_model: int, num_feature_tokens: int, num_heads: int = 4, use_bias: bool = False,
                 output_projection: bool = False, prenorm: bool = False, project_kv: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.d_model = int(d_model)
        self.num_feature_tokens = int(num_feature_tokens)
        self.num_heads = int(num_heads)
        self.use_bias = bool(use_bias)
        self.output_projection = bool(output_projection)
        self.prenorm = bool(prenorm)
        self.project_kv = bool(project_kv)

        d = self.d_model
        if d % self.num_heads:
            raise InvalidSetting("attn_heads", f"attn_heads={self.num_heads} must divide the attention width {d}")
        self.head_dim = d // self.num_heads
        self.query = PerTokenDense(d, use_bias=self.use_bias, name="query")
        if self.project_kv:
            self.key_value_proj = PerTokenDense(2 * d, use_bias=self.use_bias, name="key_value")
        if self.output_projection:
            self.out = PerTokenDense(d, use_bias=self.use_bias, name="output")
        if self.prenorm:
            self.query_norm = tf.keras.layers.LayerNormalization(name="query_norm")
            self.kv_norm = tf.keras.layers.LayerNormalization(name="kv_norm")

    def _heads(self, x):
        """[B, N, d] -> [B, A, N, d_h]."""
        x = tf.reshape(x, [tf.shape(x)[0], -1, self.num_heads, self.head_dim])
        return tf.transpose(x, [0, 2, 1, 3])

    def key_value(self, features):
        """Per-feature-token K and V, each [B, A, N_f, d_h]."""
        if not self.project_kv:
            raise ValueError("this attention layer was built with project_kv=False; pass kv=(K, V)")
        if self.prenorm:
            features = self.kv_norm(features)
        k, v = tf.split(self.key_value_proj(features), 2, axis=-1)
        return self._heads(k), self._heads(v)

    def call(self, queries, features=None, kv=None, return_attention=False):
        if kv is None:
            kv = self.key_value(features)
        return self.attend(queries, kv, return_attention=return_attention)

    def attend(self, queries, kv, query=None, output=None, return_attention=False):
        """DAA of `queries` [B, N_q, d] over precomputed kv = (K, V) (each [B, A, N_f, d_h]) -> [B, N_q, d].

        `query` / `output` (PerTokenDense layers with N_q tokens) replace this layer's own W_Q / W_O: an onboarded
        token (`mdl_tf.models.onboarded`) brings its own slices and shares K, V and the query LayerNorm.
        """
        k, v = kv
        if self.prenorm:
            queries = self.query_norm(queries)
        q = self._heads((query or self.query)(queries))
        scores = tf.einsum("band,bafd->banf", q, k) * (self.head_dim ** -0.5)
        weights = tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1)             # over N_f
        out = tf.einsum("banf,bafd->band", tf.cast(weights, v.dtype), v)
        out = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [tf.shape(out)[0], -1, self.d_model])
        if self.output_projection:
            out = (output or self.out)(out)
        return (out, weights) if return_attention else out

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model, "num_feature_tokens": self.num_feature_tokens,
                "num_heads": self.num_heads, "use_bias": self.use_bias,
                "output_projection": self.output_projection, "prenorm": self.prenorm, "project_kv": self.project_kv}
