"""One MDL layer (MDL_SPEC §4): feature interaction, then domain prompting, then fusion and per-token FFNs."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.errors import InvalidSetting
from mdl_tf.layers.attention import DomainAwareAttention
from mdl_tf.layers.fusion import DomainFusion
from mdl_tf.layers.mixing import RankMixerBlock
from mdl_tf.layers.per_token import PerTokenFFN

KV_SOURCES = ("updated", "previous")
FUSE_STATES = ("pre_ffn", "post_ffn")
INTERACTIONS = ("attention", "mixer")


def mixer_token_count(num_tokens: int, d_model: int) -> int:
    """The smallest token count >= num_tokens that divides d (TokenMixing needs it); the rest are padding tokens."""
    for count in range(num_tokens, d_model + 1):
        if d_model % count == 0:
            return count
    raise InvalidSetting("d_model", f"{num_tokens} tokens cannot be mixed at d_model={d_model}: no count between "
                                    f"them divides d; give d_model >= {num_tokens}")


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class MDLBlock(tf.keras.layers.Layer):
    """T_f [B,N_f,d], T_s [B,N_s(+1),d], T_t [B,N_t,d], membership [B,N_s] -> the three token sets of the next layer.

        T_f' = FeatureBlock(T_f)
        Ŝ    = DAA_s(T_s, T_f') + T_s            T̂_t = DAA_t(T_t, T_f') + T_t
        s̄    = DomainFusion(Ŝ, membership)      T̃_t = T̂_t + s̄
        T_s' = PFFN_s(Ŝ) + Ŝ                     T_t' = PFFN_t(T̃_t) + T̃_t

    Information flows one way: T_f' never depends on T_s or T_t. `scenario_ffn=False` omits PFFN_s (the last layer's
    is never used, MDL_SPEC §4.6) and returns Ŝ as T_s'. Every block owns its weights.

    Ablations (MDL_SPEC §11): `scenario_interaction="mixer"` / `task_interaction="mixer"` drop DAA_s / DAA_t and
    append T_s / T_t to the tokens entering the RankMixer block instead (learnable padding tokens make the count
    divide d; their outputs are discarded): the domain slice of its output replaces Ŝ / T̂_t, and the feature tokens
    now also see those domain tokens. `task_path=False` ("w/o task token") drops DAA_t, PFFN_t and the task tokens;
    the third output is then s̄ [B, 1, d], the fused scenario state.

    Regularisation and budget (not in the paper; defaults reproduce it): `domain_ffn_multiplier` sets PFFN_s and
    PFFN_t's hidden width to that multiple of d (default: `ffn_multiplier`, the feature block's); `dropout` drops
    their hidden units in training (`call(..., training=True)`); `domain_ffn_prenorm` makes the FFN sublayers
    pre-LN (T_s' = PFFN_s(LN(Ŝ)) + Ŝ, T_t' = PFFN_t(LN(T̃_t)) + T̃_t, one LayerNorm over d per stream), so with
    `domain_prenorm` (the attention's queries and K/V) every sublayer of the domain streams reads a normalised input
    while the residual streams themselves stay un-normalised (Xiong et al., "On Layer Normalization in the
    Transformer Architecture", 2020).
    """

    def __init__(self, num_feature_tokens: int, d_model: int, ffn_multiplier: int = 4,
                 feature_block: str = "rankmixer", attn_heads: int = 4, attn_bias: bool = False,
                 attn_out_proj: bool = False, domain_prenorm: bool = False, share_kv: bool = False,
                 kv_source: str = "updated", fuse_state: str = "pre_ffn", scenario_ffn: bool = True,
                 use_global_token: bool = True, scenario_path: bool = True, task_path: bool = True,
                 scenario_interaction: str = "attention", task_interaction: str = "attention",
                 num_scenario_tokens: int = 0, num_task_tokens: int = 0, domain_ffn_multiplier: int | None = None,
                 dropout: float = 0.0, domain_ffn_prenorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("scenario_interaction", scenario_interaction), ("task_interaction", task_interaction)):
            if value not in INTERACTIONS:
                raise InvalidSetting(name, f"{name} must be one of {INTERACTIONS}, got {value!r}")
        if not (scenario_path or task_path):
            raise ValueError("an MDL block needs scenario tokens or task tokens (both ablated)")
        self.task_path = bool(task_path)
        # Token counts of the domain sets (for the padding of the "mixer" ablations).
        self._num_scenario_tokens, self._num_task_tokens = int(num_scenario_tokens), int(num_task_tokens)
        self.scenario_interaction = scenario_interaction if scenario_path else "attention"
        self.task_interaction = task_interaction if task_path else "attention"
        if kv_source not in KV_SOURCES:
            raise InvalidSetting("kv_source", f"kv_source must be one of {KV_SOURCES}, got {kv_source!r}")
        if fuse_state not in FUSE_STATES:
            raise InvalidSetting("fuse_state", f"fuse_state must be one of {FUSE_STATES}, got {fuse_state!r}")
        self.num_feature_tokens, self.d_model = int(num_feature_tokens), int(d_model)
        self.ffn_multiplier, self.feature_block = int(ffn_multiplier), feature_block
        self.attn_heads, self.attn_bias, self.attn_out_proj = int(attn_heads), bool(attn_bias), bool(attn_out_proj)
        self.domain_prenorm, self.share_kv, self.kv_source = bool(domain_prenorm), bool(share_kv), kv_source
        self.fuse_state, self.use_global_token = fuse_state, bool(use_global_token)
        # scenario_path=False is the "w/o scenario token" ablation: no DAA_s, no fusion, no PFFN_s.
        self.scenario_path = bool(scenario_path)
        # A post-FFN fusion needs the scenario FFN even in the last layer.
        self.scenario_ffn = self.scenario_path and (bool(scenario_ffn) or fuse_state == "post_ffn")

        attn = dict(d_model=d_model, num_feature_tokens=num_feature_tokens, num_heads=attn_heads, use_bias=attn_bias,
                    output_projection=attn_out_proj, prenorm=domain_prenorm)
        self.feature = RankMixerBlock(ffn_multiplier, variant=feature_block, name="feature_block")
        self.scenario_attends = self.scenario_path and self.scenario_interaction == "attention"
        self.task_attends = self.task_path and self.task_interaction == "attention"
        share_kv = share_kv and self.scenario_attends and self.task_attends
        self.share_kv = share_kv
        self.attn_s = DomainAwareAttention(**attn, name="scenario_attention") if self.scenario_attends else None
        self.attn_t = (DomainAwareAttention(**attn, project_kv=not share_kv, name="task_attention")
                       if self.task_attends else None)
        self.fusion = DomainFusion(use_global_token, name="fusion") if self.scenario_path else None
        # The domain tokens' FFNs may be narrower than the feature tokens' (`domain_ffn_multiplier`): at a fixed
        # parameter budget that leaves width to the feature backbone.
        self.domain_ffn_multiplier = int(domain_ffn_multiplier or ffn_multiplier)
        self.dropout = float(dropout)
        domain_hidden = self.domain_ffn_multiplier * d_model
        self.ffn_s = (PerTokenFFN(domain_hidden, dropout=dropout, name="scenario_ffn") if self.scenario_ffn
                      else None)
        self.ffn_t = PerTokenFFN(domain_hidden, dropout=dropout, name="task_ffn") if self.task_path else None
        self.domain_ffn_prenorm = bool(domain_ffn_prenorm)
        norm = dict(epsilon=1e-6)
        self.ffn_norm_s = (tf.keras.layers.LayerNormalization(**norm, name="scenario_ffn_norm")
                           if self.domain_ffn_prenorm and self.ffn_s is not None else None)
        self.ffn_norm_t = (tf.keras.layers.LayerNormalization(**norm, name="task_ffn_norm")
                           if self.domain_ffn_prenorm and self.ffn_t is not None else None)
        # Only the "mixer" ablations pad: learnable tokens appended so TokenMixing's count divides d. Counted here, not
        # in build, so an impossible width is refused when the model is constructed.
        n_mixed = self.num_feature_tokens
        if self.scenario_path and self.scenario_interaction == "mixer":
            n_mixed += self._num_scenario_tokens
        if self.task_path and self.task_interaction == "mixer":
            n_mixed += self._num_task_tokens
        self._pads = mixer_token_count(n_mixed, self.d_model) - n_mixed if n_mixed > self.num_feature_tokens else 0

    def build(self, input_shape):
        self.padding_tokens = (self.add_weight("padding_tokens", shape=(self._pads, self.d_model), initializer="zeros")
                               if self._pads else None)
        super().build(input_shape)

    def _mix(self, feature_tokens, scenario_tokens, task_tokens):
        """RankMixer over features (+ the domain tokens of a "mixer" ablation); returns T_f', mixed T_s, mixed T_t."""
        parts = [feature_tokens]
        mix_s = self.scenario_path and self.scenario_interaction == "mixer"
        mix_t = self.task_path and self.task_interaction == "mixer"
        if mix_s:
            parts.append(scenario_tokens)
        if mix_t:
            parts.append(task_tokens)
        if len(parts) == 1:
            return self.feature(feature_tokens), None, None
        if self.padding_tokens is not None:
            batch = tf.shape(feature_tokens)[0]
            parts.append(tf.tile(tf.cast(self.padding_tokens, feature_tokens.dtype)[None], [batch, 1, 1]))
        out = self.feature(tf.concat(parts, axis=1))
        n_f, n_s = self.num_feature_tokens, scenario_tokens.shape[1] if mix_s else 0
        mixed_s = out[:, n_f:n_f + n_s] if mix_s else None
        mixed_t = out[:, n_f + n_s:n_f + n_s + task_tokens.shape[1]] if mix_t else None
        return out[:, :n_f], mixed_s, mixed_t

    def call(self, feature_tokens, scenario_tokens, task_tokens, membership, return_attention=False, training=None):
        state = self.prompt(feature_tokens, scenario_tokens, task_tokens)
        t_f, t_s, t_t = self.update(state, membership, training=training)
        return (t_f, t_s, t_t, state["weights"]) if return_attention else (t_f, t_s, t_t)

    def prompt(self, feature_tokens, scenario_tokens, task_tokens) -> dict:
        """Steps 1-3 (MDL_SPEC §4.1, Eq. 6-8): T_f' = FeatureBlock(T_f), Ŝ = DAA_s(T_s, T_f') + T_s and
        T̂_t = DAA_t(T_t, T_f') + T_t. Returns {"t_f", "s_hat", "t_hat", "kv_s", "kv_input", "weights", "t_s"}: the
        scenario path's K, V ([B, A, N_f, d_h] each; None without attention) and `task_kv(state)` let an onboarded
        token (`mdl_tf.models.onboarded`) attend to the same feature tokens; "t_s" is the input T_s."""
        t_f, mixed_s, mixed_t = self._mix(feature_tokens, scenario_tokens, task_tokens)
        kv_input = t_f if self.kv_source == "updated" else feature_tokens
        state = {"t_f": t_f, "t_s": scenario_tokens, "weights": {}, "kv_s": None, "kv_input": kv_input,
                 "s_hat": None, "t_hat": None}
        if self.scenario_attends:
            state["kv_s"] = self.attn_s.key_value(kv_input)
            a_s, state["weights"]["scenario"] = self.attn_s(scenario_tokens, kv=state["kv_s"], return_attention=True)
            state["s_hat"] = a_s + scenario_tokens
        elif self.scenario_path:
            state["s_hat"] = mixed_s
        if self.task_attends:
            # K, V are projected inside attn_t's call (its weights live in its name scope); `task_kv` recomputes them
            # for an onboarded task token.
            a_t, state["weights"]["task"] = self.attn_t(task_tokens, kv_input, kv=state["kv_s"] if self.share_kv
                                                        else None, return_attention=True)
            state["t_hat"] = a_t + task_tokens
        elif self.task_path:
            state["t_hat"] = mixed_t
        return state

    def task_kv(self, state: dict) -> tuple:
        """The task path's K, V [B, A, N_f, d_h] of a `prompt` state (the same ops attn_t ran on the same input)."""
        return state["kv_s"] if self.share_kv else self.attn_t.key_value(state["kv_input"])

    def update(self, state: dict, membership, s_bar=None, training=None) -> tuple:
        """Steps 4-6 (Eq. 9-15) on `prompt`'s state: s̄ = DomainFusion(Ŝ, M) (or the given `s_bar` [B, d]),
        T̃_t = T̂_t + s̄, T_s' = PFFN_s(Ŝ) + Ŝ, T_t' = PFFN_t(T̃_t) + T̃_t. Returns (T_f', T_s', T_t')."""
        t_f, s_hat, t_hat = state["t_f"], state["s_hat"], state["t_hat"]
        if not self.scenario_path:
            return t_f, state["t_s"], self._ffn(self.ffn_t, self.ffn_norm_t, t_hat, training)
        t_s = self._ffn(self.ffn_s, self.ffn_norm_s, s_hat, training) if self.ffn_s is not None else s_hat
        if s_bar is None:
            s_bar = self.fusion(s_hat if self.fuse_state == "pre_ffn" else t_s, membership)
        if not self.task_path:
            t_t = s_bar[:, None, :]  # "w/o task token": hand the fused scenario state to the model's towers
        else:
            t_tilde = t_hat + s_bar[:, None, :]
            t_t = self._ffn(self.ffn_t, self.ffn_norm_t, t_tilde, training)
        return t_f, t_s, t_t

    @staticmethod
    def _ffn(ffn, norm, x, training):
        """The residual FFN sublayer of a domain stream: PFFN(x) + x, or PFFN(LN(x)) + x with `domain_ffn_prenorm`."""
        return ffn(norm(x) if norm is not None else x, training=training) + x

    def get_config(self):
        return {**super().get_config(), "num_feature_tokens": self.num_feature_tokens, "d_model": self.d_model,
                "ffn_multiplier": self.ffn_multiplier, "feature_block": self.feature_block,
                "attn_heads": self.attn_heads, "attn_bias": self.attn_bias, "attn_out_proj": self.attn_out_proj,
                "domain_prenorm": self.domain_prenorm, "share_kv": self.share_kv, "kv_source": self.kv_source,
                "fuse_state": self.fuse_state, "scenario_ffn": self.scenario_ffn,
                "use_global_token": self.use_global_token, "scenario_path": self.scenario_path,
                "task_path": self.task_path, "scenario_interaction": self.scenario_interaction,
                "task_interaction": self.task_interaction, "num_scenario_tokens": self._num_scenario_tokens,
                "num_task_tokens": self._num_task_tokens, "domain_ffn_multiplier": self.domain_ffn_multiplier,
                "dropout": self.dropout, "domain_ffn_prenorm": self.domain_ffn_prenorm}
