"""Raw feature rows -> serialized tf.Examples matching `mdl_tf.export.raw_feature_spec`."""
from __future__ import annotations

import math

import tensorflow as tf

from mdl_tf.config import FeatureConfig
from mdl_tf.export import raw_feature_spec


def row_to_example(row: dict, cfg: FeatureConfig) -> bytes:
    """One raw row (column -> value) to a serialized tf.Example; a missing or empty value is left out (defaults)."""
    feats = {}
    for name, spec in raw_feature_spec(cfg).items():
        value = row.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            continue
        if spec.dtype == tf.float32:
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        elif spec.dtype == tf.int64:
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(float(value))]))
        else:
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(value).encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def rows_to_examples(frame, cfg: FeatureConfig) -> list:
    return [row_to_example(r, cfg) for r in frame.to_dict("records")]
