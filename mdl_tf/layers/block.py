"""One MDL layer (MDL_SPEC §4): feature interaction, then domain prompting, then fusion and per-token FFNs."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.layers.attention import DomainAwareAttention
from mdl_tf.layers.fusion import DomainFusion
from mdl_tf.layers.mixing import RankMixerBlock
from mdl_tf.layers.per_token import PerTokenFFN

KV_SOURCES = ("updated", "previous")
FUSE_STATES = ("pre_ffn", "post_ffn")


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class MDLBlock(tf.keras.layers.Layer):
    """T_f [B,N_f,d], T_s [B,N_s(+1),d], T_t [B,N_t,d], membership [B,N_s] -> the three token sets of the next layer.

        T_f' = FeatureBlock(T_f)
        Ŝ    = DAA_s(T_s, T_f') + T_s            T̂_t = DAA_t(T_t, T_f') + T_t
        s̄    = DomainFusion(Ŝ, membership)      T̃_t = T̂_t + s̄
        T_s' = PFFN_s(Ŝ) + Ŝ                     T_t' = PFFN_t(T̃_t) + T̃_t

    Information flows one way: T_f' never depends on T_s or T_t. `scenario_ffn=False` omits PFFN_s (the last layer's
    is never used, MDL_SPEC §4.6) and returns Ŝ as T_s'. Every block owns its weights.
    """

    def __init__(self, num_feature_tokens: int, d_model: int, ffn_multiplier: int = 4,
                 feature_block: str = "rankmixer", attn_heads: int = 4, attn_bias: bool = False,
                 attn_out_proj: bool = False, domain_prenorm: bool = False, share_kv: bool = False,
                 kv_source: str = "updated", fuse_state: str = "pre_ffn", scenario_ffn: bool = True,
                 use_global_token: bool = True, scenario_path: bool = True, **kwargs):
        super().__init__(**kwargs)
        if kv_source not in KV_SOURCES:
            raise ValueError(f"kv_source must be one of {KV_SOURCES}, got {kv_source!r}")
        if fuse_state not in FUSE_STATES:
            raise ValueError(f"fuse_state must be one of {FUSE_STATES}, got {fuse_state!r}")
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
        share_kv = share_kv and self.scenario_path
        self.share_kv = share_kv
        self.attn_s = DomainAwareAttention(**attn, name="scenario_attention") if self.scenario_path else None
        self.attn_t = DomainAwareAttention(**attn, project_kv=not share_kv, name="task_attention")
        self.fusion = DomainFusion(use_global_token, name="fusion") if self.scenario_path else None
        self.ffn_s = PerTokenFFN(ffn_multiplier * d_model, name="scenario_ffn") if self.scenario_ffn else None
        self.ffn_t = PerTokenFFN(ffn_multiplier * d_model, name="task_ffn")

    def call(self, feature_tokens, scenario_tokens, task_tokens, membership, return_attention=False):
        t_f = self.feature(feature_tokens)
        kv_input = t_f if self.kv_source == "updated" else feature_tokens
        if self.scenario_path:
            kv_s = self.attn_s.key_value(kv_input)
            a_s, w_s = self.attn_s(scenario_tokens, kv=kv_s, return_attention=True)
            s_hat = a_s + scenario_tokens
        a_t, w_t = self.attn_t(task_tokens, kv_input, kv=kv_s if self.share_kv else None, return_attention=True)
        t_hat = a_t + task_tokens
        if not self.scenario_path:
            t_t = self.ffn_t(t_hat) + t_hat
            return (t_f, scenario_tokens, t_t, {"task": w_t}) if return_attention else (t_f, scenario_tokens, t_t)
        t_s = self.ffn_s(s_hat) + s_hat if self.ffn_s is not None else s_hat
        s_bar = self.fusion(s_hat if self.fuse_state == "pre_ffn" else t_s, membership)
        t_tilde = t_hat + s_bar[:, None, :]
        t_t = self.ffn_t(t_tilde) + t_tilde
        if return_attention:
            return t_f, t_s, t_t, {"scenario": w_s, "task": w_t}
        return t_f, t_s, t_t

    def get_config(self):
        return {**super().get_config(), "num_feature_tokens": self.num_feature_tokens, "d_model": self.d_model,
                "ffn_multiplier": self.ffn_multiplier, "feature_block": self.feature_block,
                "attn_heads": self.attn_heads, "attn_bias": self.attn_bias, "attn_out_proj": self.attn_out_proj,
                "domain_prenorm": self.domain_prenorm, "share_kv": self.share_kv, "kv_source": self.kv_source,
                "fuse_state": self.fuse_state, "scenario_ffn": self.scenario_ffn,
                "use_global_token": self.use_global_token, "scenario_path": self.scenario_path}
