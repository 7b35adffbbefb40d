"""The TF Transform `preprocessing_fn`: raw columns -> the transformed-feature contract of `mdl_tf.data.transform`.

Everything comes from the feature config carried in the Transform's custom config (the same `features.yaml` the
Trainer, the serving signatures and the Evaluator read):
* categorical / multi-hot / sequence ids: one vocabulary per owner (`shares_vocab_with` shares it), fitted on the
  training split with the feature's `min_frequency`; 0 is padding, 1 OOV or missing, 2.. the vocabulary; a feature
  with `hash_buckets: N` runs no analyzer and writes no vocabulary file: its ids are 2 + fingerprint hash mod N;
* numerics: z-score with the training mean and standard deviation, clipped, missing -> 0;
* multi-hot kept first `max_len`, sequences last `max_len` (newest), 0-padded on the right;
* the scenario column (and membership column) -> `scenario_mask` [B, N_s] and `scenario_index` [B]; an unseen
  scenario value gets an all-zero mask and index N_s, so only the global token is fused for it;
* labels -> `labels` [B, N_t] (0 where missing) and `label_mask` [B, N_t]; they are outputs, never model features.
"""
from __future__ import annotations

import mdl_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads, also in Beam workers)
import tensorflow as tf
import tensorflow_transform as tft

from mdl_tf.config import FeatureConfig
from mdl_tf.data.transform import FIRST_ID, OOV_ID, dense_column, id_tokens, raw_dtypes, transform_raw
from tfx_pipeline.pipeline.configs import feature_config_from

LABELS = "labels"
LABEL_MASK = "label_mask"
MISSING_LABEL = -1


def vocabulary_name(owner: str) -> str:
    """The TFT vocabulary file of a vocabulary owner (the Trainer sizes embedding tables from it)."""
    return f"vocab_{owner}"


def dense_raw_columns(inputs: dict, cfg: FeatureConfig) -> dict:
    dtypes = raw_dtypes(cfg)
    out = {}
    for col in cfg.raw_feature_columns:
        if col not in inputs:
            raise KeyError(f"raw column '{col}' declared in feature config '{cfg.name}' is not in the input schema; "
                           f"regenerate schema.pbtxt with `mdl-tf schema export --schema <schema dir>` or fix "
                           f"features.yaml")
        float_col = dtypes.get(col) == "float"
        out[col] = dense_column(inputs[col], dtypes.get(col), float("nan") if float_col else "")
    return out


def fit_and_apply(cfg: FeatureConfig, raw: dict) -> dict:
    """Analyzers (vocabularies, moments) over the training data, then the shared transform ops."""
    # A threshold of 1 keeps every token; TFT wants None for that (it warns on 1).
    thresholds = {cfg.vocab_owner(f): f.min_frequency for f in cfg.features
                  if f.is_id_feature and cfg.vocab_owner(f) == f.name and f.min_frequency > 1}
    vocabs = {owner: tft.vocabulary(tokens, frequency_threshold=thresholds.get(owner),
                                    vocab_filename=vocabulary_name(owner))
              for owner, tokens in id_tokens(cfg, raw).items()}
    moments = {}
    for f in cfg.features_of_kind("numeric"):
        x = tf.cast(raw[f.name], tf.float32)
        valid = tf.boolean_mask(x, tf.logical_not(tf.math.is_nan(x)))
        std = tf.sqrt(tft.var(valid))
        moments[f.name] = (tft.mean(valid), tf.where(std > 1e-12, std, tf.ones_like(std)))

    def lookup(owner: str, strings: tf.Tensor) -> tf.Tensor:
        ids = tft.apply_vocabulary(strings, vocabs[owner], default_value=-1)
        return tf.where(ids < 0, tf.constant(OOV_ID, tf.int64), ids + FIRST_ID)

    return transform_raw(cfg, raw, lookup, moments.__getitem__)


def label_outputs(inputs: dict, cfg: FeatureConfig) -> dict:
    cols = [tf.cast(dense_column(inputs[c], "float", float("nan")), tf.float32) for c in cfg.label_columns]
    y = tf.stack(cols, axis=1)
    known = tf.logical_not(tf.math.is_nan(y))
    return {LABELS: tf.where(known, y, tf.zeros_like(y)), LABEL_MASK: tf.cast(known, tf.float32)}


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    """TFX Transform entry point (`Transform(preprocessing_fn='tfx_pipeline.models.preprocessing.preprocessing_fn')`)."""
    cfg = feature_config_from(custom_config)
    outputs = fit_and_apply(cfg, dense_raw_columns(inputs, cfg))
    # Labels are absent at serving time; TFT then prunes these two outputs.
    if all(c in inputs for c in cfg.label_columns):
        outputs.update(label_outputs(inputs, cfg))
    return outputs
