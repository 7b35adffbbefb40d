"""RankMixer feature interaction: parameter-free token mixing plus per-token FFNs (MDL_SPEC §4.2)."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.errors import InvalidSetting
from mdl_tf.layers.per_token import PerTokenFFN

FEATURE_BLOCKS = ("rankmixer", "eq6_literal")


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class TokenMixing(tf.keras.layers.Layer):
    """Parameter-free RankMixer token mixing with H = T heads.

    [B, T, D] -> reshape [B, T, H, D/H] -> transpose [B, H, T, D/H] -> reshape [B, H, T·D/H] = [B, T, D].
    Output token h holds slice h of every input token. It is a pure permutation of the D·T entries.
    """

    def build(self, input_shape):
        self.num_tokens, self.width = int(input_shape[-2]), int(input_shape[-1])
        if self.width % self.num_tokens:
            raise ValueError(f"TokenMixing needs the token width ({self.width}) divisible by the number of tokens "
                             f"({self.num_tokens}); choose d as a multiple of N_f")
        super().build(input_shape)

    def call(self, x):
        t, d = self.num_tokens, self.width
        x = tf.reshape(x, [-1, t, t, d // t])
        x = tf.transpose(x, [0, 2, 1, 3])
        return tf.reshape(x, [-1, t, d])

    def inverse(self, y):
        """Undo `call`: with H = T the mixing is its own inverse (a transpose of the two token-sized axes)."""
        return self.call(y)


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class RankMixerBlock(tf.keras.layers.Layer):
    """One RankMixer layer on feature tokens [B, N_f, d] -> [B, N_f, d].

    variant="rankmixer" (default): S = LN(TM(X) + X);  X' = LN(PFFN(S) + S).
    variant="eq6_literal" (MDL Eq. 6 as printed): X' = PFFN(LN(TM(X) + X)).
    """

    def __init__(self, ffn_multiplier: int = 4, variant: str = "rankmixer", epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if variant not in FEATURE_BLOCKS:
            raise InvalidSetting("feature_block", f"feature_block must be one of {FEATURE_BLOCKS}, got {variant!r}")
        self.ffn_multiplier = int(ffn_multiplier)
        self.variant = variant
        self.epsilon = epsilon

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.mixing = TokenMixing(name="token_mixing")
        self.norm1 = tf.keras.layers.LayerNormalization(epsilon=self.epsilon, name="norm_mix")
        self.ffn = PerTokenFFN(self.ffn_multiplier * d, name="pffn")
        if self.variant == "rankmixer":
            self.norm2 = tf.keras.layers.LayerNormalization(epsilon=self.epsilon, name="norm_ffn")
        super().build(input_shape)

    def call(self, x):
        s = self.norm1(self.mixing(x) + x)
        if self.variant == "eq6_literal":
            return self.ffn(s)
        return self.norm2(self.ffn(s) + s)

    def get_config(self):
        return {**super().get_config(), "ffn_multiplier": self.ffn_multiplier, "variant": self.variant,
                "epsilon": self.epsilon}
