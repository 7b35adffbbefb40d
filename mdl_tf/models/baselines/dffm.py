"""DFFM (CIKM 2023): scenario-conditioned dynamic-weight feature interaction.

The scenario vector generates (1) low-rank weights that transform every feature token before the RankMixer
interaction, T_f ← T_f + (T_f U(e_scn)) V(e_scn) with U [N_f, d, r], V [N_f, r, d] per row, and (2) a shift of the
behaviour-sequence attention query (the target item's embedding), so the DIN pooling attends per scenario (built
only when the schema has a sequence feature pooled by DIN).

U's generator starts random and V's at zero, so T_f starts unchanged and both learn (LoRA's initialisation). Starting
both at zero would freeze them for good: each factor's gradient is proportional to the other, so both stay zero.
"""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.models.baselines.backbone import BackboneModel


class DFFMModel(BackboneModel):
    model_name = "dffm"
    revision = 2  # 2: U's generator starts random (in revision 1 both factors started and stayed at zero)

    @classmethod
    def extra_hparams(cls):
        return {"rank": 4}

    def build_heads(self, rank=4, **_):
        n_f, d = self.feature_tokenizer.num_tokens, self.d_model
        self.rank = int(rank)
        self.u_generator = tf.keras.layers.Dense(n_f * d * self.rank, name="dynamic_weight_u")
        self.v_generator = tf.keras.layers.Dense(n_f * d * self.rank, kernel_initializer="zeros",
                                                 name="dynamic_weight_v")  # T_f starts unchanged
        # Only where a DIN pooling reads the query (no sequence feature, or seq_encoder="mean": nothing would).
        self.query_shift = (tf.keras.layers.Dense(self.embedder.embedding_dim, name="sequence_query_shift")
                            if self.cfg.features_of_kind("sequence") and self.embedder.seq_encoder == "din" else None)
        self.towers = self.task_towers()

    def embed(self, features):
        if self.query_shift is None:
            return self.embedder(features)
        return self.embedder(features, target_shift=self.query_shift(self.scenario_vector(features)))

    def feature_tokens(self, features):
        t_f = self.feature_tokenizer(self.embed(features))
        n_f, d, r = self.feature_tokenizer.num_tokens, self.d_model, self.rank
        e_scn = self.scenario_vector(features)
        u = tf.reshape(self.u_generator(e_scn), [-1, n_f, d, r])
        v = tf.reshape(self.v_generator(e_scn), [-1, n_f, r, d])
        t_f = t_f + tf.einsum("bnr,bnrd->bnd", tf.einsum("bnd,bndr->bnr", t_f, u), v)
        for block in self.blocks:
            t_f = block(t_f)
        return t_f

    def head_logits(self, h, e_scn, features, training=False):
        return self.towers(self.per_task(h))[..., 0]
