"""The shared body of every baseline (MDL_SPEC §10): MDL's tokenizer and an L-layer RankMixer backbone.

    T_f = FeatureTokenizer(FeatureEmbedder(x))     [B, N_f, d]
    T_f = RankMixerBlock^L(T_f);  h = mean_n T_f   [B, d]
    e_scn = M-weighted mean of scenario embeddings [B, d_s]  (zeros for an unseen scenario; None for heads that
                                                     do not read it, `uses_scenario_vector = False`)

Subclasses add their multi-scenario / multi-task parts in `head_logits(h, e_scn, features, training)`.
"""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.data.transform import SCENARIO_MASK
from mdl_tf.layers import RankMixerBlock
from mdl_tf.layers.per_token import PerTokenFFN
from mdl_tf.models.base import MultiDistributionModel
from mdl_tf.training.settings import check_model_sizes

BACKBONE_DEFAULTS = dict(d_model=64, num_layers=2, ffn_multiplier=4, hidden=64, tokenizer="group",
                         seq_encoder="din", scenario_dim=16, embedding_dim=None)


class BackboneModel(MultiDistributionModel):
    """Base class of the baselines. `hidden` is the width of towers and experts (the budget knob besides d)."""

    model_name = "backbone"
    # False for heads that never read e_scn: the model then has no scenario embedding (no weight without gradient).
    uses_scenario_vector = True
    # Why `mdl-tf bench onboarding --baseline` cannot grow this model by one scenario (route (d): every weight with
    # one scenario axis grows a slice), or None when it can.
    route_d_refusal = None
    # The model's own counts (`extra_hparams`) whose 0 still builds the model; the others must be >= 1.
    zero_counts = ()

    def __init__(self, feature_config, vocab_sizes, d_model=64, num_layers=2, ffn_multiplier=4, hidden=64,
                 tokenizer="group", seq_encoder="din", scenario_dim=16, embedding_dim=None, **kwargs):
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k in self.extra_hparams()}
        check_model_sizes(d_model=d_model, num_layers=num_layers, ffn_multiplier=ffn_multiplier, hidden=hidden,
                          scenario_dim=scenario_dim,
                          **({} if embedding_dim is None else {"embedding_dim": embedding_dim}))
        # A model's own counts (experts, levels, DFFM's rank) are >= 1 too, but those in `zero_counts`, where 0 is
        # still the model (PEPNet without tower layers, PLE without shared experts).
        counts = {k: v for k, v in extra.items() if type(self.extra_hparams()[k]) is int}
        check_model_sizes(**{k: v for k, v in counts.items() if k not in self.zero_counts})
        check_model_sizes(minimum=0, **{k: v for k, v in counts.items() if k in self.zero_counts})
        super().__init__(feature_config, vocab_sizes, **kwargs)
        cfg = self.cfg
        self.hparams = dict(d_model=d_model, num_layers=num_layers, ffn_multiplier=ffn_multiplier, hidden=hidden,
                            tokenizer=tokenizer, seq_encoder=seq_encoder, scenario_dim=scenario_dim,
                            embedding_dim=embedding_dim, **{**self.extra_hparams(), **extra})
        self.d_model, self.hidden = int(d_model), int(hidden)
        self.build_feature_tokens(d_model, embedding_dim, seq_encoder, tokenizer)
        self.blocks = [RankMixerBlock(ffn_multiplier, name=f"rankmixer_{i}") for i in range(num_layers)]
        self.scenario_embedding = (self.add_weight("scenario_embedding", shape=(cfg.num_scenarios, scenario_dim),
                                                   initializer="glorot_uniform")
                                   if self.uses_scenario_vector else None)
        self.build_heads(**self.hparams)

    # -- for subclasses --------------------------------------------------------------------------------------------
    @classmethod
    def extra_hparams(cls) -> dict:
        """Model-specific hyperparameters and their defaults (expert counts, ...)."""
        return {}

    def build_heads(self, **hparams) -> None:
        raise NotImplementedError

    def head_logits(self, h, e_scn, features, training=False) -> tf.Tensor:
        raise NotImplementedError

    # -- shared pieces ---------------------------------------------------------------------------------------------
    def task_towers(self, name: str = "task_towers") -> PerTokenFFN:
        """One d_in -> hidden -> 1 GELU MLP per task on [B, N_t, d_in] (einsum over tasks)."""
        return PerTokenFFN(self.hidden, output_dim=1, name=name)

    def per_task(self, x) -> tf.Tensor:
        """[B, d] -> [B, N_t, d]: the same input for every task tower."""
        return tf.tile(x[:, None, :], [1, self.cfg.num_tasks, 1])

    def embed(self, features) -> dict:
        return self.embedder(features)

    def feature_tokens(self, features) -> tf.Tensor:
        t_f = self.feature_tokenizer(self.embed(features))
        for block in self.blocks:
            t_f = block(t_f)
        return t_f

    def scenario_vector(self, features) -> tf.Tensor:
        m = tf.cast(features[SCENARIO_MASK], self.compute_dtype)
        norm = tf.maximum(tf.reduce_sum(m, -1, keepdims=True), 1.0)
        return tf.matmul(m / norm, tf.cast(self.scenario_embedding, self.compute_dtype))

    def compute_logits(self, features, training=False):
        h = tf.reduce_mean(self.feature_tokens(features), axis=1)
        e_scn = self.scenario_vector(features) if self.uses_scenario_vector else None
        logits = self.head_logits(h, e_scn, features, training=training)
        return tf.cast(logits, tf.float32)
