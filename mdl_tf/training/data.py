"""tf.data input pipelines from validated frames: (transformed features, {labels, label_mask}) batches."""
from __future__ import annotations

import pandas as pd
import tensorflow as tf

from mdl_tf.config import FeatureConfig
from mdl_tf.data.transform import FeatureTransform, labels_and_mask, raw_columns


def make_dataset(frame: pd.DataFrame, cfg: FeatureConfig, transform: FeatureTransform, batch_size: int,
                 shuffle: bool = False, seed: int = 0, cache: bool = True) -> tf.data.Dataset:
    raw = raw_columns(frame, cfg)
    labels, mask = labels_and_mask(frame, cfg)
    ds = tf.data.Dataset.from_tensor_slices((raw, {"labels": labels, "label_mask": mask}))
    if shuffle:
        ds = ds.shuffle(min(len(frame), 100_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda r, y: (transform(r), y), num_parallel_calls=tf.data.AUTOTUNE)
    if cache and not shuffle:
        ds = ds.cache()
    return ds.prefetch(tf.data.AUTOTUNE)
