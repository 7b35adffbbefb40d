"""Hashed id features (`hash_buckets` in features.yaml): the config's rules, one stable bucket per raw value in every
path (the in-process transform of `mdl-tf train`, its serving signature, another process; the TF Transform path is in
test_preprocessing.py and test_pipeline.py), no vocabulary, and the value contract accepting any id."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mdl_tf import config as cfgmod
from mdl_tf import values
from mdl_tf.data import synthetic
from mdl_tf.data.io import read_split
from mdl_tf.data.transform import (FIRST_ID, OOV_ID, PAD_ID, FeatureTransform, fit_stats, hash_ids, raw_columns,
                                   vocab_sizes)
from mdl_tf.serving.examples import row_to_example, rows_to_examples
from tests.conftest import REPO

BUCKETS = synthetic.ITEM_HASH_BUCKETS
# FarmHash Fingerprint64 mod 4096, + FIRST_ID. Pinned: a TensorFlow upgrade or another machine that changed them would
# silently re-map every id of every trained model.
PINNED = {"i1": 3587, "i2": 873, "7": 1178}


def _raw():
    return copy.deepcopy(synthetic.FEATURES_YAML)


def _feature(raw, name):
    return next(f for f in raw["features"] if f["name"] == name)


# -- the config ---------------------------------------------------------------------------------------------------
def test_synthetic_config_hashes_item_ids_and_their_history_shares_the_table():
    cfg = synthetic.feature_config()
    assert cfg.feature("item_id").hash_buckets == BUCKETS and cfg.feature("hist_items").hash_buckets == BUCKETS
    assert cfg.vocab_owner(cfg.feature("hist_items")) == "item_id"
    assert not cfg.feature("user_id").is_hashed
    assert cfgmod.from_dict(cfg.to_dict(), "round trip") == cfg


@pytest.mark.parametrize("edit, needle", [
    (lambda r: _feature(r, "item_price").update(hash_buckets=100), r"\(item_price\): hash_buckets is for id features"),
    (lambda r: _feature(r, "item_tags").update(hash_buckets=0), r"\(item_tags\): hash_buckets must be an integer >= 1"),
    (lambda r: _feature(r, "item_tags").update(hash_buckets=-3), r"\(item_tags\): hash_buckets must be an integer >= 1"),
    (lambda r: _feature(r, "device").update(hash_buckets="many"), r"\(device\): 'hash_buckets' must be an integer"),
    (lambda r: _feature(r, "device").update(hash_buckets=1.5), r"\(device\): 'hash_buckets' must be an integer"),
    (lambda r: _feature(r, "user_id").update(hash_buckets=64),
     r"\(user_id\): min_frequency needs a vocabulary .* remove 'min_frequency' or 'hash_buckets'"),
    (lambda r: _feature(r, "hist_items").pop("hash_buckets"),
     r"'hist_items' \(no hash_buckets\) shares_vocab_with 'item_id' \(hash_buckets: 4096\).*same hash_buckets"),
    (lambda r: _feature(r, "hist_items").update(hash_buckets=512),
     r"'hist_items' \(hash_buckets: 512\) shares_vocab_with 'item_id' \(hash_buckets: 4096\)"),
])
def test_bad_hash_buckets_are_refused_naming_the_file_feature_and_fix(edit, needle):
    raw = _raw()
    edit(raw)
    with pytest.raises(cfgmod.ConfigError, match=needle) as err:
        cfgmod.from_dict(raw, "schemas/x/features.yaml")
    assert str(err.value).startswith("schemas/x/features.yaml")


def test_a_vocabulary_feature_cannot_share_with_a_hashed_one():
    raw = _raw()
    _feature(raw, "item_id").pop("hash_buckets")
    with pytest.raises(cfgmod.ConfigError, match=r"'hist_items' \(hash_buckets: 4096\) shares_vocab_with 'item_id' "
                                                  r"\(no hash_buckets\)"):
        cfgmod.from_dict(raw, "features.yaml")


# -- one bucket per value, everywhere -----------------------------------------------------------------------------
def test_buckets_are_pinned_and_the_same_in_another_process():
    tokens = ["i1", "i2", "7", "", "ü-ñ", "x" * 300, str(2 ** 63 - 1)]
    here = hash_ids(tf.constant(tokens), BUCKETS).numpy().tolist()
    assert {t: here[tokens.index(t)] for t in PINNED} == PINNED
    assert all(FIRST_ID <= i < FIRST_ID + BUCKETS for i in here)
    code = ("import json, sys; import mdl_tf; import tensorflow as tf; from mdl_tf.data.transform import hash_ids; "
            "print(json.dumps(hash_ids(tf.constant(json.loads(sys.argv[1])), int(sys.argv[2])).numpy().tolist()))")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "12345"}
    child = subprocess.run([sys.executable, "-c", code, json.dumps(tokens), str(BUCKETS)], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(child.stdout.strip().splitlines()[-1]) == here


def _hashed(tokens):
    return hash_ids(tf.constant(tokens), BUCKETS).numpy()


def test_in_process_transform_hashes_without_a_vocabulary(synth_dir, synth_cfg):
    frame = read_split(synth_dir, "train", synth_cfg)
    stats = fit_stats(frame, synth_cfg)
    assert "item_id" not in stats["vocabularies"] and "hist_items" not in stats["vocabularies"]
    sizes = vocab_sizes(synth_cfg, stats)
    assert sizes["item_id"] == sizes["hist_items"] == BUCKETS + FIRST_ID
    rows = frame.iloc[:64].copy()
    rows.loc[rows.index[0], "item_id"] = ""                      # missing -> OOV, not a bucket
    rows.loc[rows.index[1], "item_id"] = "never-seen-item"       # unseen -> its own bucket, not OOV
    out = FeatureTransform(synth_cfg, stats)({k: tf.constant(v) for k, v in raw_columns(rows, synth_cfg).items()})
    ids = out["item_id"].numpy()
    assert ids[0] == OOV_ID
    np.testing.assert_array_equal(ids[1:], _hashed(rows["item_id"].iloc[1:].tolist()))
    hist = out["hist_items"].numpy()
    for cell, row in zip(rows["hist_items"], hist):
        tokens = [t for t in cell.split("|") if t][-synth_cfg.feature("hist_items").max_len:]
        expected = _hashed(tokens).tolist() if tokens else []
        assert row.tolist() == expected + [PAD_ID] * (len(row) - len(expected))


def test_serving_signature_gives_the_same_buckets(synth_model, synth_dir, synth_cfg):
    rows = read_split(synth_dir, "test", synth_cfg).iloc[:32].copy()
    rows.loc[rows.index[0], "item_id"] = ""
    loaded = tf.saved_model.load(str(synth_model / "saved_model"))
    out = loaded.signatures["transform_features"](examples=tf.constant(rows_to_examples(rows, synth_cfg)))
    ids = out["item_id"].numpy()
    assert ids[0] == OOV_ID
    np.testing.assert_array_equal(ids[1:], _hashed(rows["item_id"].iloc[1:].tolist()))
    meta = json.loads((synth_model / "saved_model" / "assets.extra" / "mdl_metadata.json").read_text())
    assert meta["vocab_sizes"]["item_id"] == BUCKETS + FIRST_ID


def test_int_ids_hash_as_their_digits_and_a_missing_int_id_stays_missing():
    """A hashed `dtype: int` feature: 7 and "7" are one id in every door; an absent int id is OOV when served (not
    the bucket of a made-up default such as -1)."""
    raw = _raw()
    raw["features"].append({"name": "author_id", "kind": "categorical", "group": "item", "dtype": "int",
                            "hash_buckets": BUCKETS})
    cfg = cfgmod.from_dict(raw, "t.yaml")
    frame = synthetic.generate(1000, seed=3).frame.drop(columns="split").iloc[:4].copy()
    frame["author_id"] = ["7", "", str(2 ** 63 - 1), "-1"]  # read_split's canonical text
    transform = FeatureTransform(cfg, fit_stats(frame, cfg))
    in_process = transform({k: tf.constant(v) for k, v in raw_columns(frame, cfg).items()})["author_id"].numpy()
    assert in_process.tolist() == [PINNED["7"], OOV_ID, *_hashed([str(2 ** 63 - 1), "-1"]).tolist()]

    from mdl_tf.export import ServingModule

    class Identity(tf.keras.Model):
        def call(self, x):
            return {t: tf.zeros([tf.shape(x["scenario_index"])[0]]) for t in cfg.task_names}

    signature = ServingModule(Identity(), transform, cfg).signatures()["transform_features"]
    examples = [row_to_example({**r, "author_id": v}, cfg, ignore_unknown=True)
                for r, v in zip(frame.to_dict("records"), [7, None, 2 ** 63 - 1, -1])]
    served = signature(tf.constant(examples))["author_id"].numpy()
    np.testing.assert_array_equal(served, in_process)


# -- the value contract ---------------------------------------------------------------------------------------------
def test_hashed_features_accept_any_id_and_refuse_what_is_not_one():
    cfg = synthetic.feature_config()
    rules = values.column_rules(cfg)
    for value, canonical in [("i999999999", "i999999999"), ("never seen ü", "never seen ü"), (2 ** 62, str(2 ** 62)),
                             ("", None)]:
        assert values.check_value(rules["item_id"], value) == canonical
    assert values.check_value(rules["hist_items"], ["a", 3, "z z"]) == "a|3|z z"
    for bad in (1.5, True, ["i1"]):
        with pytest.raises(values.InvalidValue):
            values.check_value(rules["item_id"], bad)
    checked = values.check_frame(pd.DataFrame({c: [""] for c in cfg.required_columns})
                                 .assign(scenario="home", item_id="brand-new", ts="1", click="1", purchase="0"),
                                 cfg, "f.csv")
    assert checked["item_id"].tolist() == ["brand-new"]
