"""PEPNet (MDL_SPEC §10): scenario-personalised embeddings (EPNet) and persona-personalised task towers (PPNet)."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.layers.experts import GateNU
from mdl_tf.layers.per_token import PerTokenDense
from mdl_tf.models.baselines.backbone import BackboneModel


class PEPNetModel(BackboneModel):
    """EPNet: E' = E ⊙ GateNU(e_scn ⊕ stop_grad(E)) on the concatenated feature embeddings, before the tokenizer's
    projection. PPNet: each task tower's hidden layers are rescaled by GateNU(e_persona ⊕ stop_grad(h)), where
    e_persona holds the embeddings of the config's important id features (user / item ids)."""

    model_name = "pepnet"
    zero_counts = ("tower_layers",)

    @classmethod
    def extra_hparams(cls):
        return {"tower_layers": 2}

    def build_heads(self, tower_layers=2, **_):
        cfg = self.cfg
        self.persona = sorted({f.name for d in ("task", "scenario") for f in cfg.important_features(d)})
        width = sum(self.embedder.feature_width(f.name) for f in cfg.features)
        self.ep_gate = GateNU(width, hidden=self.hidden, name="epnet_gate")
        self.tower_layers = [PerTokenDense(self.hidden, activation="relu", name=f"tower_{i}")
                             for i in range(tower_layers)]
        self.pp_gates = [GateNU(self.hidden, hidden=self.hidden, name=f"ppnet_gate_{i}") for i in range(tower_layers)]
        self.out = PerTokenDense(1, name="task_outputs")

    def embed(self, features):
        embedded = self.embedder(features)
        names = [f.name for f in self.cfg.features]
        flat = tf.concat([embedded[n] for n in names], -1)                    # [B, W]
        gate = self.ep_gate(tf.concat([self.scenario_vector(features), tf.stop_gradient(flat)], -1)[:, None])
        flat = flat * gate[:, 0]
        sizes = [self.embedder.feature_width(n) for n in names]
        self._persona = tf.concat([embedded[n] for n in self.persona], -1)
        return dict(zip(names, tf.split(flat, sizes, axis=-1)))

    def head_logits(self, h, e_scn, features, training=False):
        context = self.per_task(tf.concat([self._persona, tf.stop_gradient(h)], -1))   # [B, N_t, ·]
        x = self.per_task(h)
        for layer, gate in zip(self.tower_layers, self.pp_gates):
            x = layer(x) * gate(context)
        return self.out(x)[..., 0]
