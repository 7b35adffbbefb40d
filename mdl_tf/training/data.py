"""tf.data input pipelines from validated frames: (transformed features, {labels, label_mask}) batches.

The transform runs once per frame, in large chunks, before shuffling and batching: string lookups and sequence
splitting are then not repeated every epoch (on MovieLens-1M's 800k training rows this is most of the input cost),
and an epoch only gathers integer and float rows.
"""
from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
import tensorflow as tf

from mdl_tf.config import FeatureConfig
from mdl_tf.data.transform import FeatureTransform, labels_and_mask, raw_columns

TRANSFORM_CHUNK = 16_384
_TRACED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _traced(transform: FeatureTransform):
    """`transform` as one tf.function per transform object. tf.data traces the function `map` is given on every
    `map`, and building the transform's string, lookup and ragged ops takes ~0.3 s; one training transforms its eval
    rows three times (validation, evaluation, diagnostics). A tf.function is traced once per input signature and a
    later `map` only calls it. It holds a weak reference, so the cache never keeps a transform alive."""
    fn = _TRACED.get(transform)
    if fn is None:
        ref = weakref.ref(transform)
        fn = _TRACED[transform] = tf.function(lambda raw: ref()(raw), autograph=False)
    return fn


def transformed_arrays(frame: pd.DataFrame, cfg: FeatureConfig, transform: FeatureTransform,
                       chunk: int = TRANSFORM_CHUNK) -> dict:
    """The model inputs of every row of `frame`: {name: np.ndarray [N, ...]} (the transform applied in chunks)."""
    ds = tf.data.Dataset.from_tensor_slices(raw_columns(frame, cfg)).batch(chunk)
    parts = list(ds.map(_traced(transform), num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def make_dataset(frame: pd.DataFrame, cfg: FeatureConfig, transform: FeatureTransform, batch_size: int,
                 shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of (transformed features, {"labels": [B, N_t], "label_mask": [B, N_t]}); shuffled each epoch when
    `shuffle` (buffer: up to 100,000 rows). The rows are transformed once, up front, and held in memory."""
    labels, mask = labels_and_mask(frame, cfg)
    ds = tf.data.Dataset.from_tensor_slices((transformed_arrays(frame, cfg, transform),
                                             {"labels": labels, "label_mask": mask}))
    if shuffle:
        ds = ds.shuffle(min(len(frame), 100_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
