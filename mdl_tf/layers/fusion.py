"""Domain-fused module (MDL_SPEC §4.5): the instance's scenario states plus the global token, into the task tokens."""
from __future__ import annotations

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class DomainFusion(tf.keras.layers.Layer):
    """s̄ = (Σ_k M_k·Ŝ_k + Ŝ_g) / (Σ_k M_k + 1)   (global token last in Ŝ).

    scenario_states Ŝ [B, N_s(+1), d], membership M [B, N_s] -> s̄ [B, d]. A row with no known scenario fuses the
    global token alone. With `use_global_token=False`, Ŝ has N_s tokens and s̄ is the mean of the active ones (zeros
    for a row with none). Non-member tokens are multiplied by an exact 0, so they cannot change s̄ (bit-exact).
    """

    def __init__(self, use_global_token: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.use_global_token = bool(use_global_token)

    def call(self, scenario_states, membership):
        total, count = self.sum_and_count(scenario_states, membership)
        if self.use_global_token:
            return total / count
        return total / tf.maximum(count, tf.ones_like(count))

    def sum_and_count(self, scenario_states, membership):
        """(Σ_k M_k·Ŝ_k (+ Ŝ_g) [B, d], Σ_k M_k (+ 1) [B, 1]): the numerator and denominator of s̄, which an
        onboarded scenario token extends (`mdl_tf.models.onboarded`)."""
        m = tf.cast(membership, scenario_states.dtype)
        n_s = m.shape[-1]
        total = tf.einsum("bk,bkd->bd", m, scenario_states[:, :n_s])
        count = tf.reduce_sum(m, axis=-1, keepdims=True)
        if self.use_global_token:
            return total + scenario_states[:, n_s], count + 1.0
        return total, count

    def get_config(self):
        return {**super().get_config(), "use_global_token": self.use_global_token}
