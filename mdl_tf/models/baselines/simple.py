"""RankMixer (backbone only), SharedBottom and MMoE (MDL_SPEC §10)."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.data.transform import SCENARIO_MASK
from mdl_tf.layers.experts import Experts, Gates, active_weights
from mdl_tf.layers.per_token import per_token_glorot
from mdl_tf.models.baselines.backbone import BackboneModel


class RankMixerModel(BackboneModel):
    """h -> one MLP tower per task. The scenario is only an ordinary feature (the scenario id, if the config lists
    it among the features)."""

    model_name = "rankmixer"
    uses_scenario_vector = False
    route_d_refusal = ("it has no scenario-indexed weight (the scenario is only an input feature), so route (d) "
                       "would grow and train nothing")

    def build_heads(self, **_):
        self.towers = self.task_towers()

    def head_logits(self, h, e_scn, features, training=False):
        return self.towers(self.per_task(h))[..., 0]


class SharedBottomModel(BackboneModel):
    """The backbone is the shared bottom; h_k = ReLU(W_k h + b_k) per scenario, averaged over the active scenarios,
    then one MLP tower per task."""

    model_name = "shared_bottom"
    uses_scenario_vector = False  # its scenario parts are the per-scenario layers, chosen by the mask

    def build_heads(self, **_):
        k, d = self.cfg.num_scenarios, self.d_model
        self.scenario_kernel = self.add_weight("scenario_kernel", shape=(k, d, d), initializer=per_token_glorot(k, d, d))
        self.scenario_bias = self.add_weight("scenario_bias", shape=(k, d), initializer="zeros")
        self.towers = self.task_towers()

    def head_logits(self, h, e_scn, features, training=False):
        h_k = tf.nn.relu(tf.einsum("bd,kde->bke", h, self.scenario_kernel) + self.scenario_bias)
        w = tf.cast(active_weights(features[SCENARIO_MASK]), h_k.dtype)
        return self.towers(self.per_task(tf.einsum("bk,bke->be", w, h_k)))[..., 0]


class MMoEModel(BackboneModel):
    """E experts on h; task n's gate softmax(W_n [h ⊕ e_scn]) mixes them (scenario-aware gates); one tower per task."""

    model_name = "mmoe"

    @classmethod
    def extra_hparams(cls):
        return {"num_experts": 8}

    def build_heads(self, num_experts=8, **_):
        self.experts = Experts(num_experts, self.hidden, name="experts")
        self.gates = Gates(self.cfg.num_tasks, num_experts, name="task_gates")
        self.towers = self.task_towers()

    def head_logits(self, h, e_scn, features, training=False):
        experts = self.experts(h)                                         # [B, E, H]
        gates = self.gates(tf.concat([h, e_scn], -1))                     # [B, N_t, E]
        return self.towers(tf.einsum("bne,beh->bnh", gates, experts))[..., 0]
