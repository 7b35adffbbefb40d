"""Tokenization (MDL_SPEC §3): feature tokens T_f, scenario tokens T_s (+ global), task tokens T_t."""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.config import FeatureConfig
from mdl_tf.data.transform import PAD_ID
from mdl_tf.errors import InvalidSetting
from mdl_tf.layers.embedding import SparseEmbedding, TargetAttentionPooling, masked_mean
from mdl_tf.layers.per_token import PerTokenDense, PerTokenFFN

TOKENIZERS = ("group", "slice", "feature")
GLOBAL_INPUTS = ("mean_spec", "id")
IMP_TABLES = ("own", "shared", "shared_stop_gradient")


def _config_dict(cfg) -> dict:
    return cfg if isinstance(cfg, dict) else cfg.to_dict()


def _config(cfg) -> FeatureConfig:
    from mdl_tf.config import from_dict

    return from_dict(cfg, "layer config") if isinstance(cfg, dict) else cfg


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class FeatureEmbedder(tf.keras.layers.Layer):
    """Embeds every feature of the config: transformed features -> {feature name: [B, width]}.

    Categorical ids use their own table; multi-hot ids are mean-pooled; a sequence uses the table of the feature it
    `shares_vocab_with` and is pooled by target attention against that feature's embedding (DIN, `seq_encoder`);
    numeric features pass through as width-1 vectors.
    """

    def __init__(self, feature_config, vocab_sizes: dict, embedding_dim: int | None = None,
                 seq_encoder: str = "din", **kwargs):
        super().__init__(**kwargs)
        self.feature_config = _config_dict(feature_config)
        self.vocab_sizes = {k: int(v) for k, v in vocab_sizes.items()}
        self.cfg = _config(feature_config)
        self.embedding_dim = int(embedding_dim or self.cfg.embedding_dim)
        self.seq_encoder = seq_encoder
        self.tables = {}
        for f in self.cfg.features:
            if f.is_id_feature and f.shares_vocab_with is None:
                self.tables[f.name] = SparseEmbedding(self.vocab_sizes[f.name], self.embedding_dim,
                                                      name=f"emb_{f.name}")
        self.poolers = {f.name: TargetAttentionPooling(seq_encoder, name=f"seq_{f.name}")
                        for f in self.cfg.features_of_kind("sequence")}

    def feature_width(self, name: str) -> int:
        return 1 if self.cfg.feature(name).kind == "numeric" else self.embedding_dim

    def call(self, features, target_shift=None):
        """target_shift [B, embedding_dim] (optional) is added to every sequence's attention query (DFFM's
        scenario-conditioned behaviour attention)."""
        out = {}
        for f in self.cfg.features:
            x = features[f.name]
            if f.kind == "numeric":
                out[f.name] = tf.cast(tf.reshape(x, [-1, 1]), self.compute_dtype)
                continue
            table = self.tables[self.cfg.vocab_owner(f)]
            if f.kind == "categorical":
                out[f.name] = table(tf.reshape(x, [-1]))
            elif f.kind == "multi_hot":
                out[f.name] = masked_mean(table(x), tf.not_equal(x, PAD_ID))
            else:
                target_name = self.cfg.vocab_owner(f)
                target = table(tf.reshape(features[target_name], [-1]))
                if target_shift is not None:
                    target = target + tf.cast(target_shift, target.dtype)
                out[f.name] = self.poolers[f.name](table(x), tf.not_equal(x, PAD_ID), target)
        return out

    def get_config(self):
        return {**super().get_config(), "feature_config": self.feature_config, "vocab_sizes": self.vocab_sizes,
                "embedding_dim": self.embedding_dim, "seq_encoder": self.seq_encoder}


def feature_token_groups(cfg: FeatureConfig, mode: str = "group") -> list:
    """The feature names behind each feature token, in token order: one list per schema `token_group`, or with
    mode="feature" one single-name list per feature (schema order). mode="slice" cuts the "group" order's
    concatenation into slices (FeatureTokenizer)."""
    if mode == "feature":
        return [[f.name] for f in cfg.features]
    return [[f.name for f in cfg.features if f.group == g] for g in cfg.token_groups]


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class FeatureTokenizer(tf.keras.layers.Layer):
    """Feature embeddings {name: [B, w]} -> feature tokens T_f [B, N_f, d] (MDL_SPEC §3.1).

    mode="group" (default): the embeddings of each `token_group` are concatenated, zero-padded to the widest group and
    projected by that group's own Dense (one per-token einsum). mode="feature": the same with every feature a group of
    its own (N_f = the schema's feature count, in schema order; the semantic tokens at their finest, for schemas with
    few groups, where the domain tokens' per-token weights would otherwise outweigh the feature backbone, MDL_SPEC §6;
    not in the paper). mode="slice" (RankMixer): the concatenation of all embeddings (groups in schema order) is
    zero-padded and cut into N_f equal slices, each projected by its own Dense; N_f is `num_tokens` (RankMixer's T),
    or the number of token groups when None.

    Raises ValueError for an unknown mode, or `num_tokens` with a mode other than "slice" (there N_f is the schema's
    group or feature count).
    """

    def __init__(self, feature_config, d_model: int, feature_widths: dict, mode: str = "group",
                 num_tokens: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if mode not in TOKENIZERS:
            raise InvalidSetting("tokenizer", f"tokenizer must be one of {TOKENIZERS}, got {mode!r}")
        if num_tokens is not None and (mode != "slice" or int(num_tokens) < 1):
            raise InvalidSetting("feature_tokens", f"feature_tokens={num_tokens!r} needs tokenizer='slice' and a count "
                                                   f">= 1; with tokenizer={mode!r} the feature tokens are the schema's "
                                                   f"token_groups (or features)")
        self.feature_config = _config_dict(feature_config)
        self.cfg = _config(feature_config)
        self.d_model = int(d_model)
        self.feature_widths = {k: int(v) for k, v in feature_widths.items()}
        self.mode = mode
        self.groups = feature_token_groups(self.cfg, mode)
        self.requested_tokens = None if num_tokens is None else int(num_tokens)
        self.num_tokens = self.requested_tokens or len(self.groups)
        group_widths = [sum(self.feature_widths[n] for n in names) for names in self.groups]
        total = sum(group_widths)
        if mode != "slice":
            self.token_input_width = max(group_widths)
            self._pads = [self.token_input_width - w for w in group_widths]
        else:
            self.token_input_width = -(-total // self.num_tokens)
            self._pads = [self.token_input_width * self.num_tokens - total]
        self.projection = PerTokenDense(self.d_model, name="group_projection")

    def call(self, embedded):
        if self.mode != "slice":
            rows = []
            for names, pad in zip(self.groups, self._pads):
                parts = [embedded[n] for n in names]
                if pad:
                    parts.append(tf.zeros([tf.shape(parts[0])[0], pad], parts[0].dtype))
                rows.append(tf.concat(parts, axis=-1))
            x = tf.stack(rows, axis=1)
        else:
            parts = [embedded[n] for names in self.groups for n in names]
            if self._pads[0]:
                parts.append(tf.zeros([tf.shape(parts[0])[0], self._pads[0]], parts[0].dtype))
            x = tf.reshape(tf.concat(parts, axis=-1), [-1, self.num_tokens, self.token_input_width])
        return self.projection(x)

    def get_config(self):
        return {**super().get_config(), "feature_config": self.feature_config, "d_model": self.d_model,
                "feature_widths": self.feature_widths, "mode": self.mode, "num_tokens": self.requested_tokens}


@tf.keras.utils.register_keras_serializable(package="mdl_tf")
class DomainTokenizer(tf.keras.layers.Layer):
    """Sample-dependent domain tokens (MDL_SPEC §3.2-3.3): t_k = ReLU(FFN_k(ê_imp ⊕ ê_spec^k)), k = 1..N.

    ê_imp embeds the domain's important features: in this layer's own tables (`imp_tables="own"`, the spec, and
    this layer's default) or, as MDLModel does by default, read from the feature tokens' tables (`"shared"`);
    ê_spec^k is a learnable per-domain id embedding, optionally concatenated with per-domain numeric priors
    `priors` [B, N, P]. With `global_token=True` a shared token is appended last, its spec input the mean of the
    ê_spec^k (`global_input="mean_spec"`) or its own learnable embedding (`"id"`). FFN_k is per token.
    `output_norm=True` applies a LayerNorm over d to every token after the ReLU (not in the paper).
    `imp_tables="own"` looks ê_imp up in this layer's tables; `"shared"` reads the feature embeddings the caller
    passes as `embedded` (the feature tokens' own tables: no extra id rows to memorise with; MDLModel's default since
    MovieLens-1M, benchmarks/results/movielens1m/FINDINGS.md); `"shared_stop_gradient"` reads them the same way but
    sends no gradient back into them (the id rows learn from the feature tokens' path alone; a probe of whether the
    domain tokens' extra paths into the id rows speed up memorisation; not in the paper).
    `dropout` drops FFN_k's hidden units in training (`call(..., training=True)`; not in the paper).

    ids: {feature: int ids [B]} (and embedded {feature: [B, e]} when shared) -> [B, N (+1), d].
    Raises ValueError for an unknown `global_input` / `imp_tables` or no important feature.
    """

    def __init__(self, num_domains: int, important_vocab_sizes: dict, d_model: int, embedding_dim: int = 16,
                 spec_dim: int | None = None, ffn_multiplier: int = 4, ffn_layers: int = 2,
                 global_token: bool = False, global_input: str = "mean_spec", output_norm: bool = False,
                 imp_tables: str = "own", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if imp_tables not in IMP_TABLES:
            raise InvalidSetting("imp_tables", f"imp_tables must be one of {IMP_TABLES}, got {imp_tables!r}")
        if global_input not in GLOBAL_INPUTS:
            raise InvalidSetting("global_input", f"global_input must be one of {GLOBAL_INPUTS}, got {global_input!r}")
        if not important_vocab_sizes:
            raise ValueError("DomainTokenizer needs at least one important feature; domain tokens must be "
                             "sample-dependent (MDL_SPEC §3)")
        self.num_domains = int(num_domains)
        self.important_vocab_sizes = {k: int(v) for k, v in important_vocab_sizes.items()}
        self.d_model = int(d_model)
        self.embedding_dim = int(embedding_dim)
        self.spec_dim = int(spec_dim or embedding_dim)
        self.ffn_multiplier = int(ffn_multiplier)
        self.ffn_layers = int(ffn_layers)
        self.global_token = bool(global_token)
        self.global_input = global_input
        self.imp_tables = imp_tables
        self.important_tables = {name: SparseEmbedding(size, self.embedding_dim, name=f"imp_{name}")
                                 for name, size in self.important_vocab_sizes.items()} if imp_tables == "own" else {}
        spec_rows = self.num_domains + (1 if self.global_token and global_input == "id" else 0)
        self.spec_embedding = SparseEmbedding(spec_rows, self.spec_dim, name="spec_embedding")
        self.dropout = float(dropout)
        self.ffn = PerTokenFFN(self.ffn_multiplier * self.d_model, output_dim=self.d_model,
                               num_layers=self.ffn_layers, dropout=dropout, name="init_ffn")
        # ReLU(FFN(·)) of 0.05-scale embeddings gives tokens of RMS ~0.02, half exact zeros: their first-layer
        # queries are ~0 and the attention over the feature tokens is uniform (MDL_MOVIELENS_REVIEW §1.3).
        # output_norm LayerNorms each token (per-token scale and shift learnable) to unit RMS.
        self.output_norm = bool(output_norm)
        self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="token_norm") if output_norm else None

    @property
    def num_tokens(self) -> int:
        return self.num_domains + int(self.global_token)

    def important_inputs(self, ids, embedded=None):
        """ê_imp [B, e_imp]: the important features, from this layer's tables or from `embedded` (shared)."""
        if self.imp_tables != "own":
            if embedded is None:
                raise ValueError(f"{self.name}: imp_tables={self.imp_tables!r} needs the feature embeddings "
                                 f"(embedded=...)")
            imp = tf.concat([embedded[n] for n in self.important_vocab_sizes], -1)
            return tf.stop_gradient(imp) if self.imp_tables == "shared_stop_gradient" else imp
        return tf.concat([self.important_tables[n](tf.reshape(ids[n], [-1])) for n in self.important_tables], -1)

    def activate(self, pre):
        """ReLU, then the optional token LayerNorm (shared by all tokens): FFN output -> token."""
        tokens = tf.nn.relu(pre)
        return self.norm(tokens) if self.norm is not None else tokens

    def call(self, ids, priors=None, embedded=None, training=None):
        imp = tf.cast(self.important_inputs(ids, embedded), self.compute_dtype)
        batch = tf.shape(imp)[0]
        spec_rows = self.spec_embedding(tf.range(self.spec_embedding.input_dim))        # [R, e]
        spec = tf.broadcast_to(spec_rows[None, : self.num_domains], [batch, self.num_domains, self.spec_dim])
        if priors is not None:
            spec = tf.concat([spec, tf.cast(priors, spec.dtype)], axis=-1)                  # [B, N, e + P]
        if self.global_token:
            if self.global_input == "mean_spec":
                glob = tf.reduce_mean(spec, axis=1, keepdims=True)
            else:
                glob = tf.broadcast_to(spec_rows[None, self.num_domains:], [batch, 1, self.spec_dim])
                if priors is not None:
                    glob = tf.concat([glob, tf.reduce_mean(tf.cast(priors, glob.dtype), 1, keepdims=True)], -1)
            spec = tf.concat([spec, glob], axis=1)
        imp = tf.broadcast_to(imp[:, None, :], [batch, self.num_tokens, imp.shape[-1]])
        return self.activate(self.ffn(tf.concat([imp, spec], axis=-1), training=training))

    def get_config(self):
        return {**super().get_config(), "num_domains": self.num_domains,
                "important_vocab_sizes": self.important_vocab_sizes, "d_model": self.d_model,
                "embedding_dim": self.embedding_dim, "spec_dim": self.spec_dim,
                "ffn_multiplier": self.ffn_multiplier, "ffn_layers": self.ffn_layers,
                "global_token": self.global_token, "global_input": self.global_input,
                "output_norm": self.output_norm, "imp_tables": self.imp_tables, "dropout": self.dropout}
