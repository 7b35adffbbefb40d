"""MDLModel: the Multi-Distribution Learner (MDL_SPEC §2-§4), with every default of the spec's decision table and a
flag for each alternative (§8)."""
from __future__ import annotations

import collections.abc
import copy
import numbers

import tensorflow as tf

from mdl_tf.data.transform import SCENARIO_MASK
from mdl_tf.errors import InvalidSetting
from mdl_tf.layers import DomainTokenizer, MDLBlock, ScenarioTowers, TaskHeads
from mdl_tf.layers.per_token import PerTokenFFN
from mdl_tf.models.base import MultiDistributionModel
from mdl_tf.training.settings import check_model_sizes

# The spec's defaults (MDL_SPEC §5.3, §8), except d: 256 is the production default, the registry's smaller
# datasets use 128 (a multiple of every N_f we ship); and three choices decided on MovieLens-100K's eval split
# (3 seeds each, benchmarks/results/movielens/FINDINGS.md), each with the earlier behaviour one flag away:
# head_init="zeros" (was "glorot"), domain_token_norm=True and domain_prenorm=True (were False); and one decided on
# MovieLens-1M's eval split (3 seeds, benchmarks/results/movielens1m/FINDINGS.md): imp_tables="shared" (was "own",
# the spec's separate ê_imp id tables, which memorised the training users).
MDL_DEFAULTS = dict(d_model=128, num_layers=2, ffn_multiplier=4, attn_heads=4, tokenizer="group", seq_encoder="din",
                    feature_block="rankmixer", kv_source="updated", attn_out_proj=False, attn_bias=False,
                    domain_prenorm=True, share_kv=False, init_ffn_layers=2, global_input="mean_spec",
                    fuse_state="pre_ffn", head="linear", head_init="zeros", domain_token_norm=True,
                    last_scenario_ffn=False, use_global_token=True, use_scenario_tokens=True, use_task_tokens=True,
                    scenario_interaction="attention",
                    task_interaction="attention", embedding_dim=None, imp_tables="shared",
                    domain_ffn_multiplier=None, dropout=0.0, important_features=None, feature_tokens=None,
                    domain_ffn_prenorm=False, head_input="task_token", use_priors=True)

# What each task head reads (not in the paper; "task_token" is the paper's Eq. 16): "task_token_and_pool" appends
# the mean of the final feature tokens (the baselines' h, MDL_SPEC §10) to every task token, [B, N_t, 2d]. On
# MovieLens-1M the RankMixer baseline's mean-pool-and-tower readout on MDL's own d=64 backbone held out better than
# MDL's task tokens (benchmarks/results/movielens1m/FINDINGS.md, thirteenth sitting).
HEAD_INPUTS = ("task_token", "task_token_and_pool")

# `mdl-tf train --model mdl --ablation NAME`: each removes exactly one component (MDL_SPEC §11).
ABLATIONS = {
    "no_task_tokens": {"use_task_tokens": False},
    "no_scenario_tokens": {"use_scenario_tokens": False},
    "no_global_token": {"use_global_token": False},
    "no_scenario_attention": {"scenario_interaction": "mixer"},
    "no_task_attention": {"task_interaction": "mixer"},
}


class MDLModel(MultiDistributionModel):
    """Transformed features -> logits [B, N_t] through L MDL blocks (MDL_SPEC §4.8).

        T_f = FeatureTokenizer(embeddings)       [B, N_f, d]
        T_s = ScenarioTokenizer(ê_imp, ê_spec)   [B, N_s + 1, d]   (global token last)
        T_t = TaskTokenizer(ê_imp', ê_task)      [B, N_t, d]
        L x MDLBlock; logits = TaskHeads(T_t)    [B, N_t]
        (head_input="task_token_and_pool": TaskHeads([T_t ⊕ mean_j T_f]), 2d wide)
    """

    model_name = "mdl"

    def __init__(self, feature_config, vocab_sizes, d_model=128, num_layers=2, ffn_multiplier=4, attn_heads=4,
                 tokenizer="group", seq_encoder="din", feature_block="rankmixer", kv_source="updated",
                 attn_out_proj=False, attn_bias=False, domain_prenorm=True, share_kv=False, init_ffn_layers=2,
                 global_input="mean_spec", fuse_state="pre_ffn", head="linear", head_init="zeros",
                 domain_token_norm=True, last_scenario_ffn=False,
                 use_global_token=True, use_scenario_tokens=True, use_task_tokens=True,
                 scenario_interaction="attention", task_interaction="attention", embedding_dim=None,
                 imp_tables="shared", domain_ffn_multiplier=None, dropout=0.0, important_features=None,
                 feature_tokens=None, domain_ffn_prenorm=False, head_input="task_token", use_priors=True,
                 **kwargs):
        if isinstance(init_ffn_layers, bool) or not isinstance(init_ffn_layers, int) or init_ffn_layers not in (1, 2):
            raise InvalidSetting("init_ffn_layers", f"init_ffn_layers must be 1 or 2, got {init_ffn_layers!r}")
        if not (isinstance(dropout, numbers.Real) and not isinstance(dropout, bool) and 0.0 <= dropout < 1.0):
            raise InvalidSetting("dropout", f"dropout must be in [0, 1), got {dropout!r}")
        check_model_sizes(d_model=d_model, num_layers=num_layers, ffn_multiplier=ffn_multiplier, attn_heads=attn_heads,
                          **{k: v for k, v in (("embedding_dim", embedding_dim), ("feature_tokens", feature_tokens),
                                               ("domain_ffn_multiplier", domain_ffn_multiplier)) if v is not None})
        super().__init__(feature_config, vocab_sizes, **kwargs)
        cfg = self.cfg
        self.hparams = dict(d_model=d_model, num_layers=num_layers, ffn_multiplier=ffn_multiplier,
                            attn_heads=attn_heads, tokenizer=tokenizer, seq_encoder=seq_encoder,
                            feature_block=feature_block, kv_source=kv_source, attn_out_proj=attn_out_proj,
                            attn_bias=attn_bias, domain_prenorm=domain_prenorm, share_kv=share_kv,
                            init_ffn_layers=init_ffn_layers, global_input=global_input, fuse_state=fuse_state,
                            head=head, head_init=head_init, domain_token_norm=domain_token_norm,
                            last_scenario_ffn=last_scenario_ffn, use_global_token=use_global_token,
                            use_scenario_tokens=use_scenario_tokens, use_task_tokens=use_task_tokens,
                            scenario_interaction=scenario_interaction, task_interaction=task_interaction,
                            embedding_dim=embedding_dim, imp_tables=imp_tables,
                            domain_ffn_multiplier=domain_ffn_multiplier, dropout=dropout,
                            # a copy: Keras' attribute tracking wraps the lists it holds in place
                            important_features=copy.deepcopy(important_features), feature_tokens=feature_tokens,
                            domain_ffn_prenorm=domain_ffn_prenorm, head_input=head_input, use_priors=use_priors)
        if head_input not in HEAD_INPUTS:
            raise InvalidSetting("head_input", f"head_input must be one of {HEAD_INPUTS}, got {head_input!r}")
        if head_input != "task_token" and not use_task_tokens:
            raise InvalidSetting("head_input", f"head_input={head_input!r} widens the task heads' input; without "
                                               f"task tokens (use_task_tokens=False) the task towers already read the "
                                               f"mean feature token")
        self.head_input = head_input
        self.use_scenario_tokens = bool(use_scenario_tokens)
        self.use_task_tokens = bool(use_task_tokens)
        if not (self.use_scenario_tokens or self.use_task_tokens):
            raise InvalidSetting("use_task_tokens", "MDL without scenario tokens and without task tokens is the "
                                                    "rankmixer baseline; use --model rankmixer")
        emb_dim = embedding_dim or cfg.embedding_dim
        # Not in the paper, both off by default: the domain tokens' FFN width (tokenizers and blocks) as a multiple
        # of d, and dropout on their hidden units (MDL over-fits MovieLens-1M from epoch 5, FINDINGS).
        domain_mult = int(domain_ffn_multiplier or ffn_multiplier)
        n_f = self.build_feature_tokens(d_model, emb_dim, seq_encoder, tokenizer, feature_tokens, attn_heads)

        chosen = important_choice(cfg, important_features, imp_tables)
        # ê_spec^k / ê_task^n (MDL_SPEC §3.2-3.3): the id row of the token, and the numeric priors the config
        # declares for it (`prior_for`, e.g. the item's earlier click rate in scenario k); use_priors=False keeps the
        # id row only.
        self.priors = {d: cfg.domain_priors(d) if use_priors else [] for d in ("scenario", "task")}

        def important(domain):
            return {f.name: vocab_sizes[f.name] for f in chosen[domain]}

        self.scenario_tokenizer = DomainTokenizer(
            cfg.num_scenarios, important("scenario"), d_model, emb_dim, ffn_multiplier=domain_mult,
            ffn_layers=init_ffn_layers, global_token=use_global_token, global_input=global_input,
            output_norm=domain_token_norm, imp_tables=imp_tables, dropout=dropout, name="scenario_tokenizer") if use_scenario_tokens else None
        # "w/o scenario token" ablation (MDL_SPEC §11): per-scenario towers on the final task tokens instead.
        self.scenario_towers = (None if use_scenario_tokens else
                                ScenarioTowers(cfg.num_scenarios, d_model, name="scenario_towers"))
        self.task_tokenizer = DomainTokenizer(
            cfg.num_tasks, important("task"), d_model, emb_dim, ffn_multiplier=domain_mult,
            ffn_layers=init_ffn_layers, output_norm=domain_token_norm, imp_tables=imp_tables, dropout=dropout,
            name="task_tokenizer") if use_task_tokens else None
        # "w/o task token" ablation: per-task MLP towers on [mean-pooled T_f ⊕ s̄] instead of task tokens and heads.
        self.task_towers = None if use_task_tokens else PerTokenFFN(d_model, output_dim=1, name="task_towers")
        self.blocks = [
            MDLBlock(n_f, d_model, ffn_multiplier, feature_block=feature_block, attn_heads=attn_heads,
                     attn_bias=attn_bias, attn_out_proj=attn_out_proj, domain_prenorm=domain_prenorm,
                     share_kv=share_kv, kv_source=kv_source, fuse_state=fuse_state,
                     scenario_ffn=last_scenario_ffn or layer < num_layers - 1, use_global_token=use_global_token,
                     scenario_path=use_scenario_tokens, task_path=use_task_tokens,
                     scenario_interaction=scenario_interaction, task_interaction=task_interaction,
                     num_scenario_tokens=cfg.num_scenarios + int(use_global_token), num_task_tokens=cfg.num_tasks,
                     domain_ffn_multiplier=domain_mult, dropout=dropout, domain_ffn_prenorm=domain_ffn_prenorm,
                     name=f"mdl_block_{layer}")
            for layer in range(num_layers)]
        self.heads = TaskHeads(head, init=head_init, name="task_heads") if use_task_tokens else None
        # Not in the paper (off by default): with pre-LN FFN sublayers the task stream is never normalised on its
        # own, so what reads it (the heads, or the scenario towers of that ablation) reads it through a final
        # LayerNorm, as a pre-LN transformer's output does.
        self.head_norm = (tf.keras.layers.LayerNormalization(epsilon=1e-6, name="head_norm")
                          if domain_ffn_prenorm and use_task_tokens else None)

    def tokens(self, features, return_attention=False, return_states=False, training=False):
        """Run the backbone; returns the final (T_f, T_s, T_t), then, if asked, the per-layer attention weights and
        the token states [{"feature", "scenario", "task": [B, N, d]}] of the tokenizers (index 0) and of every layer.
        `training` switches the domain-token dropout on (when `dropout` > 0)."""
        embedded = self.embedder(features)
        t_f = self.feature_tokenizer(embedded)
        t_t = (self.task_tokenizer(features, priors=self.domain_priors(features, "task"), embedded=embedded,
                                   training=training) if self.use_task_tokens else tf.zeros_like(t_f[:, :0]))
        membership = tf.cast(features[SCENARIO_MASK], t_f.dtype)
        t_s = (self.scenario_tokenizer(features, priors=self.domain_priors(features, "scenario"), embedded=embedded,
                                       training=training) if self.use_scenario_tokens else tf.zeros_like(t_f[:, :0]))
        attention, states = [], [{"feature": t_f, "scenario": t_s, "task": t_t}]
        for block in self.blocks:
            if return_attention:
                t_f, t_s, t_t, att = block(t_f, t_s, t_t, membership, return_attention=True, training=training)
                attention.append(att)
            else:
                t_f, t_s, t_t = block(t_f, t_s, t_t, membership, training=training)
            states.append({"feature": t_f, "scenario": t_s, "task": t_t})
        extra = ([attention] if return_attention else []) + ([states] if return_states else [])
        return (t_f, t_s, t_t, *extra)

    def domain_priors(self, features, domain: str):
        """The numeric priors of `domain`'s tokens [B, N, P], as the transform gives them (z-scored and clipped like
        every numeric feature), or None if the config declares none (or use_priors=False)."""
        per = self.priors[domain]
        if not per:
            return None
        flat = tf.stack([tf.reshape(features[n], [-1]) for row in per for n in row], axis=-1)  # [B, N*P]
        return tf.reshape(flat, [-1, len(per), len(per[0])])

    def compute_logits(self, features, training=False):
        t_f, _, t_t = self.tokens(features, training=training)
        if not self.use_task_tokens:  # t_t is s̄ [B, 1, d] here
            pooled = tf.concat([tf.reduce_mean(t_f, axis=1), t_t[:, 0]], axis=-1)
            return tf.cast(self.task_towers(tf.tile(pooled[:, None], [1, self.cfg.num_tasks, 1]))[..., 0], tf.float32)
        if self.head_norm is not None:
            t_t = self.head_norm(t_t)
        if self.scenario_towers is not None:
            t_t = self.scenario_towers(t_t, tf.cast(features[SCENARIO_MASK], t_t.dtype))
        if self.head_input == "task_token_and_pool":
            pooled = tf.reduce_mean(t_f, axis=1, keepdims=True)  # [B, 1, d], the baselines' h
            t_t = tf.concat([t_t, tf.tile(pooled, [1, tf.shape(t_t)[1], 1])], axis=-1)  # [B, N_t, 2d]
        return self.heads(t_t)

    def attention_maps(self, features) -> list:
        """Per layer: {"scenario": [B, A, N_s+1, N_f], "task": [B, A, N_t, N_f]} attention weights."""
        return self.tokens(features, return_attention=True)[3]

    def token_states(self, features) -> list:
        """[{"feature": T_f, "scenario": T_s, "task": T_t}] after the tokenizers (index 0) and after each layer."""
        return self.tokens(features, return_states=True)[3]


def important_choice(cfg, override: dict | None, imp_tables: str) -> dict:
    """{"scenario": [FeatureSpec], "task": [FeatureSpec]}: the features whose embeddings form ê_imp of each domain's
    tokens (MDL_SPEC §3.2). By default the feature config's `important_for`; `override` ({"scenario": [names],
    "task": [names]}, either key optional) replaces a domain's list: a probe of the important-feature choice without
    editing features.yaml. Allowed: categorical features, and multi-hot ones when ê_imp reads the shared (pooled)
    feature embeddings. Raises InvalidSetting naming the bad key or feature and what is allowed."""
    out = {d: list(cfg.important_features(d)) for d in ("scenario", "task")}
    if override is None:
        return out
    example = 'e.g. {"task": ["genres", "occupation"]}'
    if not isinstance(override, collections.abc.Mapping):
        raise InvalidSetting("important_features",
                             f"important_features must be a mapping of domain -> feature names ({example}; on the "
                             f"command line as JSON), got {override!r}")
    unknown = sorted(set(override) - set(out))
    if unknown:
        raise InvalidSetting("important_features",
                             f"important_features: unknown domain(s) {unknown}; use 'scenario' and/or 'task' "
                             f"({example})")
    kinds = ("categorical",) if imp_tables == "own" else ("categorical", "multi_hot")
    allowed = [f.name for f in cfg.features if f.kind in kinds]
    known = {f.name for f in cfg.features}
    for domain, names in override.items():
        where = f"important_features[{domain!r}]"
        if (isinstance(names, str) or not isinstance(names, collections.abc.Sequence) or not names
                or not all(isinstance(n, str) for n in names)):
            raise InvalidSetting("important_features",
                                 f"{where} = {names!r}: give a non-empty list of feature names ({example})")
        names = list(names)
        if len(set(names)) != len(names):
            raise InvalidSetting("important_features", f"{where} = {names!r}: a feature is listed twice")
        missing = [n for n in names if n not in known]
        if missing:
            raise InvalidSetting("important_features",
                                 f"{where}: {missing} not in feature config '{cfg.name}'; its features are "
                                 f"{sorted(known)}")
        if any(n not in allowed for n in names):
            raise InvalidSetting("important_features",
                                 f"{where} = {names!r}: features of kind {' or '.join(kinds)} only "
                                 f"(imp_tables={imp_tables!r}): {allowed}")
        out[domain] = [cfg.feature(n) for n in names]
    return out
