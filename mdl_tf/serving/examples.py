"""Raw feature rows -> serialized tf.Examples matching `mdl_tf.export.raw_feature_spec`.

Every value goes through the value contract (`mdl_tf.values.check_row`): a value is written in its canonical form
(integer ids exactly as int64, a JSON list of a multi-valued feature joined with its separator) or refused with a
`DataError` naming the row and the feature; nothing is converted silently.
"""
from __future__ import annotations

import tensorflow as tf

from mdl_tf import values
from mdl_tf.config import FeatureConfig


def _feature(rule: values.ColumnRule, value) -> tf.train.Feature:
    if rule.kind == "numeric":
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    if isinstance(value, int):  # int ids: exact, never through float
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))


def canonical_to_example(canonical: dict, rules: dict) -> bytes:
    """A row already checked by `values.check_row` to a serialized tf.Example (missing values are left out, so the
    signature's defaults apply)."""
    feats = {name: _feature(rules[name], v) for name, v in canonical.items() if v is not None}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def row_to_example(row: dict, cfg: FeatureConfig, where: str = "row", ignore_unknown: bool = False) -> bytes:
    """One raw row (feature -> value) to a serialized tf.Example; raises DataError naming `where` and the feature.

    A missing or empty value is left out (the signature's default). Keys the config does not know are refused unless
    `ignore_unknown`; labels and bookkeeping columns are ignored."""
    rules = values.column_rules(cfg)
    return canonical_to_example(values.check_row(row, cfg, where, rules, ignore_unknown), rules)


def rows_to_examples(frame, cfg: FeatureConfig) -> list:
    """Every row of a DataFrame (e.g. from `mdl_tf.data.io.read_split`) as a serialized tf.Example; columns the
    config does not declare are ignored (a table may carry more)."""
    rules = values.column_rules(cfg)
    return [canonical_to_example(values.check_row(r, cfg, f"row {i}", rules, ignore_unknown=True), rules)
            for i, r in enumerate(frame.to_dict("records"))]
