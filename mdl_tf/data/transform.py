"""Raw features -> model inputs, fitted on the training split and exported inside the SavedModel.

This is the `mdl-tf train` counterpart of the TF Transform `preprocessing_fn` in `tfx_pipeline/`; both produce
the same transformed-feature contract, which every model in `mdl_tf.models` reads:

| key                 | dtype / shape        | meaning                                                        |
|---------------------|----------------------|----------------------------------------------------------------|
| `<categorical>`     | int64 [B]            | id: 0 padding, 1 OOV/missing, 2.. vocabulary                   |
| `<multi_hot>`       | int64 [B, max_len]   | ids, 0-padded on the right (first `max_len` kept)              |
| `<sequence>`        | int64 [B, max_len]   | ids oldest -> newest, 0-padded on the right (last `max_len`)   |
| `<numeric>`         | float32 [B]          | z-score with training mean/std, missing -> 0, clipped to +-5   |
| `scenario_mask`     | float32 [B, N_s]     | multi-hot scenario membership; all zero for an unseen scenario |
| `scenario_index`    | int64 [B]            | index of the primary scenario, N_s when unseen                  |

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


def fit_stats(frame: pd.DataFrame, cfg: FeatureConfig) -> dict:
    """Vocabularies (by frequency, then token) and numeric moments from the training split."""
    counters: dict = collections.defaultdict(collections.Counter)
    min_freq = {}
    for f in cfg.features:
        owner = cfg.vocab_owner(f)
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


def vocab_sizes(cfg: FeatureConfig, stats: dict) -> dict:
    """Embedding-table rows per id feature (padding + OOV + vocabulary), keyed by feature name."""
    return {f.name: FIRST_ID + len(stats["vocabularies"].get(cfg.vocab_owner(f), []))
            for f in cfg.features if f.is_id_feature}


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
        values = list(cfg.scenario.values)
        self._scenario_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(values), tf.range(len(values), dtype=tf.int64)),
            default_value=-1)
        self._numeric = {k: (float(v["mean"]), float(v["std"])) for k, v in stats["numeric"].items()}

    @staticmethod
    def _as_string(x: tf.Tensor) -> tf.Tensor:
        x = tf.reshape(x, [-1])
        if x.dtype == tf.string:
            return x
        if x.dtype.is_floating:
            x = tf.cast(x, tf.int64)  # ids read as floats (e.g. 3.0) must match their integer vocabulary entries
        return tf.strings.as_string(x)

    def _split(self, x: tf.Tensor, sep: str) -> tf.RaggedTensor:
        parts = tf.strings.split(self._as_string(x), sep=sep)
        return tf.ragged.boolean_mask(parts, tf.not_equal(parts, ""))

    def _lookup_ragged(self, table, parts: tf.RaggedTensor, max_len: int, keep_last: bool) -> tf.Tensor:
        parts = parts[:, -max_len:] if keep_last else parts[:, :max_len]
        ids = tf.ragged.map_flat_values(table.lookup, parts)
        return ids.to_tensor(default_value=PAD_ID, shape=[None, max_len])

    def scenario_inputs(self, raw: dict) -> dict:
        sc = self.cfg.scenario
        n = len(sc.values)
        primary = self._scenario_table.lookup(self._as_string(raw[sc.column]))
        if sc.membership_column:
            parts = self._split(raw[sc.membership_column], sc.separator)
            idx = tf.ragged.map_flat_values(self._scenario_table.lookup, parts)
            # one_hot(-1) is all zeros, so unseen scenario values simply drop out of the mask.
            mask = tf.reduce_max(tf.one_hot(idx, n, dtype=tf.float32), axis=1)
            # A row whose membership cell is empty falls back to its scenario column.
            empty = tf.equal(parts.row_lengths(), 0)
            mask = tf.where(empty[:, None], tf.one_hot(primary, n, dtype=tf.float32), mask)
        else:
            mask = tf.one_hot(primary, n, dtype=tf.float32)
        index = tf.where(primary < 0, tf.constant(n, tf.int64), primary)
        return {SCENARIO_MASK: mask, SCENARIO_INDEX: index}

    def __call__(self, raw: dict) -> dict:
        out = {}
        for f in self.cfg.features:
            x = raw[f.name]
            if f.kind == "numeric":
                mean, std = self._numeric[f.name]
                x = tf.cast(tf.reshape(x, [-1]), tf.float32)
                z = tf.clip_by_value((x - mean) / std, -NUMERIC_CLIP, NUMERIC_CLIP)
                out[f.name] = tf.where(tf.math.is_nan(x), tf.zeros_like(z), z)
                continue
            table = self._tables.get(self.cfg.vocab_owner(f))
            if f.kind == "categorical":
                s = self._as_string(x)
                ids = table.lookup(s) if table is not None else tf.fill(tf.shape(s), tf.constant(OOV_ID, tf.int64))
                out[f.name] = tf.where(tf.equal(s, ""), tf.constant(OOV_ID, tf.int64), ids)
            else:
                parts = self._split(x, f.separator)
                out[f.name] = self._lookup_ragged(table, parts, f.max_len, keep_last=f.kind == "sequence")
        out.update(self.scenario_inputs(raw))
        return out


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
