"""STAR (MDL_SPEC §10): star-topology towers with partitioned normalization and an auxiliary scenario network."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.data.transform import SCENARIO_MASK
from mdl_tf.layers.experts import PartitionedNormalization, StarLinear
from mdl_tf.layers.per_token import PerTokenDense
from mdl_tf.models.baselines.backbone import BackboneModel


class STARModel(BackboneModel):
    """h -> PartitionedNorm -> per task: StarLinear(hidden) -> Dense(1); plus aux(e_scn) added to every logit.

    Each star layer's weight for scenario k is W ⊙ W_k (shared W, per-scenario W_k), bias b + b_k."""

    model_name = "star"

    def build_heads(self, **_):
        k = self.cfg.num_scenarios
        self.norm = PartitionedNormalization(k, name="partitioned_norm")
        # One star layer of width N_t * hidden: column block n is task n's tower (W ⊙ W_k acts elementwise, so the
        # blocks are independent towers computed in one einsum).
        self.star = StarLinear(k, self.cfg.num_tasks * self.hidden, name="star_towers")
        self.out = PerTokenDense(1, name="task_outputs")
        self.aux = tf.keras.Sequential([tf.keras.layers.Dense(self.hidden // 2 or 1, activation="relu"),
                                        tf.keras.layers.Dense(1)], name="auxiliary_network")

    def head_logits(self, h, e_scn, features, training=False):
        m = features[SCENARIO_MASK]
        z = self.norm(h, m, training=training)
        tasks = tf.reshape(self.star(z, m), [-1, self.cfg.num_tasks, self.hidden])   # [B, N_t, hidden]
        return self.out(tasks)[..., 0] + self.aux(e_scn)
