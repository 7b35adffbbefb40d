"""DFFM (CIKM 2023): scenario-conditioned dynamic-weight feature interaction.

The scenario vector generates (1) low-rank weights that transform every feature token before the RankMixer
interaction, T_f ← T_f + (T_f U(e_scn)) V(e_scn) with U [N_f, d, r], V [N_f, r, d] per row, and (2) a shift of the
behaviour-sequence attention query (the target item's embedding), so the DIN pooling attends per scenario.
"""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.models.baselines.backbone import BackboneModel


class DFFMModel(BackboneModel):
    model_name = "dffm"

    @classmethod
    def extra_hparams(cls):
        return {"rank": 4}

    def build_heads(self, rank=4, **_):
        n_f, d = self.feature_tokenizer.num_tokens, self.d_model
        self.rank = int(rank)
        self.weight_generator = tf.keras.layers.Dense(2 * n_f * d * self.rank, kernel_initializer="zeros",
                                                      name="dynamic_weight_generator")  # starts as the identity map
        self.query_shift = tf.keras.layers.Dense(self.embedder.embedding_dim, name="sequence_query_shift")
        self.towers = self.task_towers()

    def embed(self, features):
        return self.embedder(features, target_shift=self.query_shift(self.scenario_vector(features)))

    def feature_tokens(self, features):
        t_f = self.feature_tokenizer(self.embed(features))
        n_f, d, r = self.feature_tokenizer.num_tokens, self.d_model, self.rank
        uv = tf.reshape(self.weight_generator(self.scenario_vector(features)), [-1, 2, n_f, d * r])
        u = tf.reshape(uv[:, 0], [-1, n_f, d, r])
        v = tf.transpose(tf.reshape(uv[:, 1], [-1, n_f, d, r]), [0, 1, 3, 2])    # [B, N_f, r, d]
        t_f = t_f + tf.einsum("bnr,bnrd->bnd", tf.einsum("bnd,bndr->bnr", t_f, u), v)
        for block in self.blocks:
            t_f = block(t_f)
        return t_f

    def head_logits(self, h, e_scn, features, training=False):
        return self.towers(self.per_task(h))[..., 0]
