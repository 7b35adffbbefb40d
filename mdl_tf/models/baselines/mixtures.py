"""PLE and HMoE (MDL_SPEC §10): expert mixtures with task-specific (PLE) or scenario-specific (HMoE) structure."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.data.transform import SCENARIO_MASK
from mdl_tf.layers.experts import Experts, Gates
from mdl_tf.layers.per_token import PerTokenDense, PerTokenFFN
from mdl_tf.models.baselines.backbone import BackboneModel


class CGCLayer(tf.keras.layers.Layer):
    """One PLE extraction level: N_t task streams and one shared stream [B, N_t + 1, d_in] -> [B, N_t + 1, H].

    Task n mixes its own E_t experts and the E_s shared ones (gate on its stream ⊕ e_scn); the shared stream mixes
    all experts (gate on the shared stream ⊕ e_scn) and feeds the next level."""

    def __init__(self, num_tasks: int, task_experts: int, shared_experts: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.task_experts, self.shared_experts, self.units = num_tasks, task_experts, shared_experts, units

    def build(self, input_shape):
        n, e_t = self.num_tasks, self.task_experts
        # Task experts: per task, E_t one-layer experts; as a per-token dense over N_t * E_t "tokens".
        self.task_expert_layer = PerTokenDense(self.units, activation="relu", name="task_experts")
        self.shared_expert_layer = Experts(self.shared_experts, self.units, name="shared_experts")
        self.task_gate = PerTokenDense(e_t + self.shared_experts, name="task_gates")
        self.shared_gate = Gates(1, n * e_t + self.shared_experts, name="shared_gate")
        super().build(input_shape)

    def call(self, streams, e_scn):
        n, e_t = self.num_tasks, self.task_experts
        task_in = tf.repeat(streams[:, :n], e_t, axis=1)                              # [B, N_t*E_t, d_in]
        task_out = tf.reshape(self.task_expert_layer(task_in), [-1, n, e_t, self.units])
        shared_out = self.shared_expert_layer(streams[:, n])                           # [B, E_s, H]
        ctx = tf.tile(e_scn[:, None, :], [1, n, 1])
        gate_t = tf.nn.softmax(self.task_gate(tf.concat([streams[:, :n], ctx], -1)), -1)   # [B, N_t, E_t+E_s]
        own = tf.concat([task_out, tf.tile(shared_out[:, None], [1, n, 1, 1])], axis=2)    # [B, N_t, E_t+E_s, H]
        tasks = tf.einsum("bne,bneh->bnh", gate_t, own)
        all_experts = tf.concat([tf.reshape(task_out, [-1, n * e_t, self.units]), shared_out], axis=1)
        gate_s = self.shared_gate(tf.concat([streams[:, n], e_scn], -1))              # [B, 1, all]
        shared = tf.einsum("bge,beh->bgh", gate_s, all_experts)
        return tf.concat([tasks, shared], axis=1)

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks, "task_experts": self.task_experts,
                "shared_experts": self.shared_experts, "units": self.units}


class PLEModel(BackboneModel):
    """Progressive layered extraction: `levels` CGC layers (task-specific + shared experts), then task towers.

    The last level's shared stream (and so its shared gate) is computed but read by nothing: the towers read the
    task streams. It is kept so that PLE's size at the benchmarks' budget, and with it every recorded run, stays as
    it was (tests/test_baselines.py names it among the weights that never get a gradient)."""

    model_name = "ple"
    zero_counts = ("shared_experts",)

    @classmethod
    def extra_hparams(cls):
        return {"task_experts": 2, "shared_experts": 2, "levels": 2}

    def build_heads(self, task_experts=2, shared_experts=2, levels=2, **_):
        self.cgc = [CGCLayer(self.cfg.num_tasks, task_experts, shared_experts, self.hidden, name=f"cgc_{i}")
                    for i in range(levels)]
        self.towers = self.task_towers()

    def head_logits(self, h, e_scn, features, training=False):
        streams = tf.tile(h[:, None, :], [1, self.cfg.num_tasks + 1, 1])
        for layer in self.cgc:
            streams = layer(streams, e_scn)
        return self.towers(streams[:, :self.cfg.num_tasks])[..., 0]


class HMoEModel(BackboneModel):
    """Hybrid MoE. Feature space: shared experts with one gate per scenario give N_s representations, and each
    scenario's tower scores the row as if it came from that scenario (per task). Label space: the final logit for
    task n is a scenario-aware weighted sum of the N_s scores, with gradients stopped on the scenarios the row is
    not in."""

    model_name = "hmoe"
    route_d_refusal = ("its towers (one per scenario × task) and score weights (per task, over the scenarios) hold the "
                       "scenario inside another axis, and route (d) grows weights with one scenario axis only")

    @classmethod
    def extra_hparams(cls):
        return {"num_experts": 8}

    def build_heads(self, num_experts=8, **_):
        k, n = self.cfg.num_scenarios, self.cfg.num_tasks
        self.experts = Experts(num_experts, self.hidden, name="experts")
        self.scenario_gates = Gates(k, num_experts, name="scenario_gates")
        # One tower per (scenario, task) pair: N_s * N_t "tokens" of a per-token FFN.
        self.towers = PerTokenFFN(self.hidden, output_dim=1, name="scenario_task_towers")
        self.mixer = PerTokenDense(k, name="score_weights")           # per task: weights over the N_s scores

    def head_logits(self, h, e_scn, features, training=False):
        k, n = self.cfg.num_scenarios, self.cfg.num_tasks
        reps = tf.einsum("bke,beh->bkh", self.scenario_gates(tf.concat([h, e_scn], -1)), self.experts(h))
        scores = self.towers(tf.repeat(reps, n, axis=1))[..., 0]                 # [B, N_s*N_t] (scenario-major)
        scores = tf.transpose(tf.reshape(scores, [-1, k, n]), [0, 2, 1])        # [B, N_t, N_s]
        active = tf.cast(features[SCENARIO_MASK], scores.dtype)[:, None, :] > 0
        scores = tf.where(active, scores, tf.stop_gradient(scores))
        weights = tf.nn.softmax(self.mixer(self.per_task(tf.concat([h, e_scn], -1))), -1)   # [B, N_t, N_s]
        return tf.reduce_sum(weights * scores, -1)
