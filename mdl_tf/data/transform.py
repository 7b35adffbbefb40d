"""Raw features -> model inputs, fitted on the training split and exported inside the SavedModel.

This is the `mdl-tf train` counterpart of the TF Transform `preprocessing_fn` in `tfx_pipeline/`; both produce
the same transformed-feature contract, which every model in `mdl_tf.models` reads:

| key                 | dtype / shape        | meaning                                                        |
|---------------------|----------------------|----------------------------------------------------------------|
| `<categorical>`     | int64 [B]            | id: 0 padding, 1 OOV/missing, 2.. vocabulary (or hash bucket)  |
| `<multi_hot>`       | int64 [B, max_len]   | ids, 0-padded on the right (first `max_len` kept)              |
| `<sequence>`        | int64 [B, max_len]   | ids oldest -> newest, 0-padded on the right (last `max_len`)   |
| `<numeric>`         | float32 [B]          | z-score with training mean/std, missing -> 0, clipped to +-5   |
| `scenario_mask`     | float32 [B, N_s]     | multi-hot scenario membership; all zero for an unseen scenario |
| `scenario_index`    | int64 [B]            | index of the primary scenario, N_s when unseen                  |

A feature with `hash_buckets: N` has no vocabulary: its ids are `FIRST_ID + fingerprint64(id text) mod N`
(`tf.strings.to_hash_bucket_fast`, FarmHash Fingerprint64: the same bucket in every process, run and machine), so
ids 2..N+1; missing stays 1, padding 0, and nothing is fitted for it. Integer ids are hashed as their decimal text
("7"), so a dtype int column and its string form land in the same bucket.

Labels are never part of it: `labels_and_mask` builds them separately.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from mdl_tf.config import FeatureConfig
from mdl_tf.utils import atomic_write_text

PAD_ID = 0
OOV_ID = 1
FIRST_ID = 2
NUMERIC_CLIP = 5.0
STATS_FILE = "transform.json"
SCENARIO_MASK = "scenario_mask"
SCENARIO_INDEX = "scenario_index"


def _tokens(values: pd.Series, sep: str) -> list:
    return [tok for v in values for tok in v.split(sep) if tok]


def is_hashed_owner(cfg: FeatureConfig, owner: str) -> bool:
    """Whether the ids of vocabulary owner `owner` (and of every feature sharing its table) are hashed."""
    return cfg.feature(owner).is_hashed


def fit_stats(frame: pd.DataFrame, cfg: FeatureConfig) -> dict:
    """Vocabularies (by frequency, then token) and numeric moments from the training split; hashed features
    (`hash_buckets`) get no vocabulary."""
    counters: dict = collections.defaultdict(collections.Counter)
    min_freq = {}
    for f in cfg.features:
        owner = cfg.vocab_owner(f)
        if f.is_id_feature and is_hashed_owner(cfg, owner):
            continue
        if f.kind == "categorical":
            counters[owner].update(v for v in frame[f.name] if v != "")
        elif f.kind in ("multi_hot", "sequence"):
            counters[owner].update(_tokens(frame[f.name], f.separator))
        if f.kind != "numeric" and owner == f.name:
            min_freq[owner] = f.min_frequency
    vocabs = {}
    for owner, counter in counters.items():
        kept = [(tok, n) for tok, n in counter.items() if n >= min_freq.get(owner, 1)]
        vocabs[owner] = [tok for tok, _ in sorted(kept, key=lambda kv: (-kv[1], kv[0]))]
    numeric = {}
    for f in cfg.features_of_kind("numeric"):
        col = frame[f.name].to_numpy(dtype=np.float64)
        finite = col[np.isfinite(col)]
        mean = float(finite.mean()) if finite.size else 0.0
        std = float(finite.std()) if finite.size else 1.0
        numeric[f.name] = {"mean": mean, "std": std if std > 1e-12 else 1.0}
    return {"config_name": cfg.name, "config_version": cfg.version, "vocabularies": vocabs, "numeric": numeric}


def save_stats(stats: dict, directory) -> Path:
    path = Path(directory) / STATS_FILE
    atomic_write_text(path, json.dumps(stats))
    return path


def load_stats(directory) -> dict:
    return json.loads((Path(directory) / STATS_FILE).read_text())


def table_sizes(cfg: FeatureConfig, vocabulary_size) -> dict:
    """Embedding-table rows per id feature, keyed by feature name: padding + OOV + the owner's vocabulary
    (`vocabulary_size(owner)`, only called for owners with a vocabulary) or its `hash_buckets`."""
    sizes = {}
    for f in cfg.features:
        if f.is_id_feature:
            owner = cfg.feature(cfg.vocab_owner(f))
            sizes[f.name] = FIRST_ID + (owner.hash_buckets if owner.is_hashed else int(vocabulary_size(owner.name)))
    return sizes


def vocab_sizes(cfg: FeatureConfig, stats: dict) -> dict:
    """Embedding-table rows per id feature (padding + OOV + vocabulary or hash buckets), keyed by feature name."""
    return table_sizes(cfg, lambda owner: len(stats["vocabularies"].get(owner, [])))


# -- TF ops shared by FeatureTransform and the TF Transform preprocessing_fn (tfx_pipeline/models/preprocessing.py) ----
def as_string(x: tf.Tensor) -> tf.Tensor:
    """Flatten to [B] strings; ids read as floats (e.g. 3.0) become "3" so they match integer vocabulary entries."""
    x = tf.reshape(x, [-1])
    if x.dtype == tf.string:
        return x
    if x.dtype.is_floating:
        x = tf.cast(x, tf.int64)
    return tf.strings.as_string(x)


def dense_column(x, dtype: str, default) -> tf.Tensor:
    """A raw input (dense [B, 1] or sparse [B, <=1]) as a dense [B] tensor; missing cells get `default`."""
    if isinstance(x, tf.SparseTensor):
        values = x.values
        if dtype == "float":
            values = tf.cast(values, tf.float32)
        elif values.dtype != tf.string:
            values = tf.strings.as_string(values)  # int ids: missing must stay "" (OOV), not a number
        # dense_shape[1] is 0 when a whole batch misses the column; every row gets exactly one cell.
        x = tf.sparse.to_dense(tf.SparseTensor(x.indices, values, tf.stack([x.dense_shape[0], 1])),
                               default_value=default)
    elif dtype == "float":
        x = tf.cast(x, tf.float32)
    return tf.reshape(x, [-1])


def raw_dtypes(cfg: FeatureConfig) -> dict:
    """{raw column: "string" | "int" | "float"} for every raw model input."""
    dtypes = {f.name: f.dtype for f in cfg.features}
    dtypes[cfg.scenario.column] = cfg.scenario.dtype
    if cfg.scenario.membership_column:
        dtypes[cfg.scenario.membership_column] = "string"
    return dtypes


def split_tokens(x: tf.Tensor, sep: str) -> tf.RaggedTensor:
    """[B] joined strings ("a|b|c", possibly empty) -> ragged [B, None] non-empty tokens."""
    parts = tf.strings.split(as_string(x), sep=sep)
    return tf.ragged.boolean_mask(parts, tf.not_equal(parts, ""))


def hash_ids(strings: tf.Tensor, buckets: int) -> tf.Tensor:
    """int64 ids FIRST_ID..FIRST_ID+buckets-1 of id strings (any shape) by FarmHash Fingerprint64 mod `buckets`.

    Stable across processes, runs and machines (no seed, no vocabulary); the same op in the in-process transform,
    the TF Transform graph and the serving signatures."""
    return tf.strings.to_hash_bucket_fast(strings, buckets) + FIRST_ID


def id_tokens(cfg: FeatureConfig, raw: dict) -> dict:
    """Every raw id token per vocabulary owner, flat [n] strings (what a vocabulary is fitted on); hashed owners
    are left out (they have no vocabulary)."""
    out = collections.defaultdict(list)
    for f in cfg.features:
        if f.is_id_feature and is_hashed_owner(cfg, cfg.vocab_owner(f)):
            continue
        if f.kind == "categorical":
            s = as_string(raw[f.name])
            out[cfg.vocab_owner(f)].append(tf.boolean_mask(s, tf.not_equal(s, "")))
        elif f.kind in ("multi_hot", "sequence"):
            out[cfg.vocab_owner(f)].append(split_tokens(raw[f.name], f.separator).flat_values)
    return {owner: tf.concat(parts, axis=0) for owner, parts in out.items()}


def standardize(x: tf.Tensor, mean, std) -> tf.Tensor:
    """z-score clipped to +-NUMERIC_CLIP; NaN (missing) -> 0, the training mean."""
    x = tf.cast(tf.reshape(x, [-1]), tf.float32)
    z = tf.clip_by_value((x - tf.cast(mean, tf.float32)) / tf.cast(std, tf.float32), -NUMERIC_CLIP, NUMERIC_CLIP)
    return tf.where(tf.math.is_nan(x), tf.zeros_like(z), z)


def scenario_inputs(cfg: FeatureConfig, raw: dict) -> dict:
    """scenario_mask [B, N_s] and scenario_index [B] from the scenario (and membership) column.

    Values are compared with the config's scenario list (no lookup table), so this runs unchanged inside TF Transform.
    """
    sc = cfg.scenario
    n = len(sc.values)
    values = tf.constant(list(sc.values))
    scen = as_string(raw[sc.column])
    primary_hot = tf.cast(tf.equal(scen[:, None], values[None, :]), tf.float32)          # [B, N_s], 0 or 1 hot
    known = tf.reduce_any(primary_hot > 0, axis=1)
    primary = tf.where(known, tf.argmax(primary_hot, axis=1), tf.constant(n, tf.int64))
    mask = primary_hot
    if sc.membership_column:
        parts = split_tokens(raw[sc.membership_column], sc.separator)
        hits = tf.cast(tf.equal(tf.expand_dims(parts, -1), values), tf.float32)          # ragged [B, None, N_s]
        member = tf.reduce_max(hits, axis=1)
        # A row whose membership cell is empty falls back to its scenario column; unseen values drop out.
        mask = tf.where(tf.equal(parts.row_lengths(), 0)[:, None], primary_hot, member)
    return {SCENARIO_MASK: mask, SCENARIO_INDEX: primary}


def transform_raw(cfg: FeatureConfig, raw: dict, lookup, moments) -> dict:
    """The transformed-feature contract (module docstring) from [B] raw columns.

    lookup(owner, strings) -> int64 ids with OOV_ID for unknown tokens, FIRST_ID.. for vocabulary entries (never
    called for hashed owners: their ids come from `hash_ids`);
    moments(name) -> (mean, std) of a numeric feature.
    """
    def ids_of(owner: str, strings: tf.Tensor) -> tf.Tensor:
        spec = cfg.feature(owner)
        return hash_ids(strings, spec.hash_buckets) if spec.is_hashed else lookup(owner, strings)

    out = {}
    for f in cfg.features:
        x = raw[f.name]
        if f.kind == "numeric":
            out[f.name] = standardize(x, *moments(f.name))
        elif f.kind == "categorical":
            s = as_string(x)
            out[f.name] = tf.where(tf.equal(s, ""), tf.constant(OOV_ID, tf.int64), ids_of(cfg.vocab_owner(f), s))
        else:
            parts = split_tokens(x, f.separator)
            parts = parts[:, -f.max_len:] if f.kind == "sequence" else parts[:, :f.max_len]
            ids = tf.ragged.map_flat_values(lambda s, o=cfg.vocab_owner(f): ids_of(o, s), parts)
            out[f.name] = ids.to_tensor(default_value=PAD_ID, shape=[None, f.max_len])
    out.update(scenario_inputs(cfg, raw))
    return out


class FeatureTransform(tf.Module):
    """Applies fitted vocabularies and moments with TF ops, so the same code runs in tf.data and in serving."""

    def __init__(self, cfg: FeatureConfig, stats: dict, name: str = "feature_transform"):
        super().__init__(name=name)
        self.cfg = cfg
        self._tables = {}
        for owner, vocab in stats["vocabularies"].items():
            keys = tf.constant(vocab if vocab else ["\x00<empty>"], dtype=tf.string)
            ids = tf.range(FIRST_ID, FIRST_ID + tf.size(keys, out_type=tf.int64), dtype=tf.int64)
            self._tables[owner] = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, ids), default_value=OOV_ID)
        self._numeric = {k: (float(v["mean"]), float(v["std"])) for k, v in stats["numeric"].items()}

    def _lookup(self, owner: str, strings: tf.Tensor) -> tf.Tensor:
        table = self._tables.get(owner)
        if table is None:  # a feature never seen in training: everything is OOV
            return tf.fill(tf.shape(strings), tf.constant(OOV_ID, tf.int64))
        return table.lookup(strings)

    # Plain TF (no Python branch on a tensor value), so tf.data's map traces it without AutoGraph: converting the
    # transform's source took ~4 s at its first map in a process (synthetic config, 24k rows: 7.3 s -> 3.3 s).
    @tf.autograph.experimental.do_not_convert
    def __call__(self, raw: dict) -> dict:
        """raw: {column: [B] dense tensor, or a [B, <=1] SparseTensor as tf.io.VarLenFeature parses (the exported
        signatures parse int ids so, which keeps a missing int id missing)} -> the transformed features."""
        dtypes = raw_dtypes(self.cfg)
        raw = {k: dense_column(v, dtypes.get(k), float("nan") if dtypes.get(k) == "float" else "")
               if isinstance(v, tf.SparseTensor) else v for k, v in raw.items()}
        return transform_raw(self.cfg, raw, self._lookup, self._numeric.__getitem__)


def raw_columns(frame: pd.DataFrame, cfg: FeatureConfig) -> dict:
    """The raw model inputs of a validated frame as numpy arrays (labels excluded)."""
    out = {}
    numeric = {f.name for f in cfg.features_of_kind("numeric")}
    for col in cfg.raw_feature_columns:
        if col in numeric:
            out[col] = frame[col].to_numpy(dtype=np.float32)
        else:
            out[col] = frame[col].astype(str).to_numpy(dtype=object)
    return out


def labels_and_mask(frame: pd.DataFrame, cfg: FeatureConfig) -> tuple:
    """labels [B,N_t] float32 (0 where missing) and label_mask [B,N_t] (1 where the label is known)."""
    y = np.stack([frame[c].to_numpy(dtype=np.float64) for c in cfg.label_columns], axis=1)
    mask = np.isfinite(y)
    return np.where(mask, y, 0.0).astype(np.float32), mask.astype(np.float32)
