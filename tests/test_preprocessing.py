"""The TF Transform preprocessing_fn, run with tft_beam on small in-memory data, against the transform contract."""
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata

from mdl_tf import config as cfgmod
from mdl_tf.data.io import read_split
from mdl_tf.data.transform import (OOV_ID, PAD_ID, SCENARIO_INDEX, SCENARIO_MASK, FeatureTransform, fit_stats, hash_ids,
                                   raw_columns)
from mdl_tf.schema import build_schema
from tfx_pipeline.models import preprocessing
from tfx_pipeline.pipeline.configs import custom_config

ROWS = 400


def _instances(frame, cfg):
    """pandas rows -> TFT instance dicts in the CSV ExampleGen shape: empty cells are missing values."""
    kinds = {f.name: f.kind for f in cfg.features}
    out = []
    for rec in frame.to_dict("records"):
        inst = {}
        for col in cfg.required_columns:
            v = rec[col]
            missing = (isinstance(v, float) and np.isnan(v)) or v == ""
            if col == cfg.scenario.column:
                inst[col] = [str(v).encode()]
            elif col in cfg.label_columns or col == cfg.time_column:
                inst[col] = [] if missing else [int(v)]
            elif kinds.get(col) == "numeric":
                inst[col] = [] if missing else [float(v)]
            else:
                inst[col] = [] if missing else [str(v).encode()]
        out.append(inst)
    return out


def _run(instances, cfg, tmp_path):
    meta = dataset_metadata.DatasetMetadata(build_schema(cfg))
    fn = lambda inputs: preprocessing.preprocessing_fn(inputs, custom_config(cfg))  # noqa: E731
    with tft_beam.Context(temp_dir=str(tmp_path / "tft_tmp"), force_tf_compat_v1=False):
        (data, _), transform_fn = (instances, meta) | tft_beam.AnalyzeAndTransformDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "tft_out"))
    out = {k: np.stack([np.asarray(r[k]) for r in data]) for k in data[0]}
    return out, tft.TFTransformOutput(str(tmp_path / "tft_out"))


@pytest.fixture(scope="module")
def transformed(synth_dir, synth_cfg, tmp_path_factory):
    frame = read_split(synth_dir, "train", synth_cfg).iloc[:ROWS].reset_index(drop=True)
    frame.loc[3, "item_price"] = np.nan      # a missing numeric
    frame.loc[4, "device"] = ""              # a missing categorical
    frame.loc[5, "item_tags"] = ""           # an empty multi-hot
    frame.loc[6, "scenario"] = "live"        # a scenario the config does not know
    frame.loc[6, "scenarios"] = "live"
    frame.loc[7, "purchase"] = np.nan        # a missing label
    out, tft_out = _run(_instances(frame, synth_cfg), synth_cfg, tmp_path_factory.mktemp("tft"))
    return frame, out, tft_out


def _reference(frame, cfg):
    """The `mdl-tf train` transform fitted on the same rows."""
    ref = FeatureTransform(cfg, fit_stats(frame, cfg))
    return {k: v.numpy() for k, v in ref({k: tf.constant(v) for k, v in raw_columns(frame, cfg).items()}).items()}


def test_outputs_are_the_transform_contract_and_labels_stay_out_of_the_features(transformed, synth_cfg):
    frame, out, _ = transformed
    features = set(out) - {preprocessing.LABELS, preprocessing.LABEL_MASK}
    assert features == {f.name for f in synth_cfg.features} | {SCENARIO_MASK, SCENARIO_INDEX}
    assert not features & set(synth_cfg.label_columns)
    assert out["hist_items"].shape == (ROWS, 10) and out["item_tags"].shape == (ROWS, 4)
    assert out[SCENARIO_MASK].shape == (ROWS, 3)
    assert out[preprocessing.LABELS].shape == (ROWS, 2)
    np.testing.assert_array_equal(out[preprocessing.LABEL_MASK][7], [1.0, 0.0])
    np.testing.assert_array_equal(out[preprocessing.LABELS][:, 0], frame["click"].to_numpy(dtype=np.float32))


def test_matches_the_in_process_transform(transformed, synth_cfg):
    """Same padding, OOV, numerics and scenario inputs as FeatureTransform; ids decode to the same tokens."""
    frame, out, tft_out = transformed
    ref = _reference(frame, synth_cfg)
    for f in synth_cfg.features:
        if f.kind == "numeric":
            np.testing.assert_allclose(out[f.name], ref[f.name], atol=1e-4, err_msg=f.name)
            continue
        np.testing.assert_array_equal(out[f.name] == PAD_ID, ref[f.name] == PAD_ID, err_msg=f.name)
        np.testing.assert_array_equal(out[f.name] == OOV_ID, ref[f.name] == OOV_ID, err_msg=f.name)
        if f.is_hashed:  # no vocabulary: the bucket ids themselves are the same
            np.testing.assert_array_equal(out[f.name], ref[f.name], err_msg=f.name)
            continue
        vocab = tft_out.vocabulary_by_name(preprocessing.vocabulary_name(synth_cfg.vocab_owner(f)))
        known = out[f.name] >= 2
        decoded = np.array([vocab[i - 2] for i in out[f.name][known]])
        ref_stats = fit_stats(frame, synth_cfg)["vocabularies"][synth_cfg.vocab_owner(f)]
        expected = np.array([ref_stats[i - 2].encode() for i in ref[f.name][known]])
        np.testing.assert_array_equal(decoded, expected, err_msg=f.name)
    np.testing.assert_array_equal(out[SCENARIO_MASK], ref[SCENARIO_MASK])
    np.testing.assert_array_equal(out[SCENARIO_INDEX], ref[SCENARIO_INDEX])


def test_missing_values_and_unseen_scenario(transformed):
    _, out, _ = transformed
    assert out["item_price"][3] == 0.0
    assert out["device"][4] == OOV_ID
    assert (out["item_tags"][5] == PAD_ID).all()
    assert out[SCENARIO_INDEX][6] == 3 and not out[SCENARIO_MASK][6].any()
    assert (out[SCENARIO_MASK].sum(axis=1) >= 1).sum() == ROWS - 1


def test_min_frequency_sends_rare_ids_to_oov(transformed, synth_cfg):
    frame, out, tft_out = transformed
    vocab = set(tft_out.vocabulary_by_name(preprocessing.vocabulary_name("user_id")))
    counts = frame["user_id"].value_counts()
    assert vocab == {u.encode() for u, n in counts.items() if n >= 2}
    rare = frame["user_id"].map(counts).to_numpy() < 2
    assert rare.any() and (out["user_id"][rare] == OOV_ID).all()


def test_hashed_columns_get_buckets_and_no_vocabulary(transformed, synth_cfg):
    """item_id and hist_items (hash_buckets, sharing one table): TF Transform runs no analyzer for them, writes no
    vocabulary file, and gives each raw value the bucket mdl_tf.data.transform.hash_ids gives it."""
    frame, out, tft_out = transformed
    hashed = [f for f in synth_cfg.features if f.is_hashed]
    assert {f.name for f in hashed} == {"item_id", "hist_items"}
    assets = {p.name for p in Path(tft_out.transform_savedmodel_dir, "assets").iterdir()}
    assert preprocessing.vocabulary_name("user_id") in assets  # vocabularies are written here ...
    assert not {preprocessing.vocabulary_name(f.name) for f in hashed} & assets  # ... but none for hashed columns
    buckets = synth_cfg.feature("item_id").hash_buckets
    np.testing.assert_array_equal(out["item_id"], hash_ids(tf.constant(frame["item_id"].tolist()), buckets).numpy())


def test_labels_can_never_become_features(synth_cfg):
    raw = synth_cfg.to_dict()
    raw["features"].append({"name": "click", "kind": "categorical", "group": "context"})
    with pytest.raises(cfgmod.ConfigError, match="label column"):
        preprocessing.preprocessing_fn({}, {"feature_config": raw})
