"""The value contract at the serving doors: `mdl-tf predict`, the client's row -> tf.Example conversion and the
development server's checks, against a served SavedModel and the same SavedModel in process (the issue's cases
predict-nonnumeric-traceback, predict-list-multivalue-silent-oov and client-int64-id-float-rounding, then fuzzing)."""
import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mdl_tf import values
from mdl_tf.cli import main
from mdl_tf.config import from_dict
from mdl_tf.data import synthetic
from mdl_tf.data.io import DataError, read_split, split_path
from mdl_tf.data.transform import FIRST_ID, load_stats
from mdl_tf.schema import write_schema
from mdl_tf.serving import request_checks
from mdl_tf.serving.client import ServingClient, ServingError
from mdl_tf.serving.examples import row_to_example, rows_to_examples
from mdl_tf.serving.model_manager import ModelManager
from mdl_tf.serving.server import make_server, value_rules
from mdl_tf.training.trainer import TrainConfig, train
from tests.conftest import SHARED, fuzz_examples

CASES = Path(SHARED) / "cases"
MODEL = "mdl"


def _serve(saved_model: Path, base: Path):
    shutil.copytree(saved_model, base / MODEL / "1")
    manager = ModelManager(base / MODEL, MODEL, poll_seconds=60)
    servable = manager.refresh()
    server, port = make_server(manager, port=0)
    server.start()
    return server, f"127.0.0.1:{port}", servable


@pytest.fixture(scope="module")
def served(synth_model, tmp_path_factory):
    """(target, in-process servable) of the synthetic model served by the development server."""
    server, target, servable = _serve(synth_model / "saved_model", tmp_path_factory.mktemp("values_served"))
    yield target, servable
    server.stop(0).wait()


def _local(servable, examples: list) -> dict:
    out = servable.signatures["serving_default"](examples=tf.constant(examples))
    return {k: v.numpy() for k, v in out.items()}


def _predict_cli(target, rows_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    code = main(["predict", "--server", target, "--model-name", MODEL, "--input", str(rows_file), "--output",
                 str(out)])
    return code, out, capsys.readouterr()


# -- case predict-nonnumeric-traceback --------------------------------------------------------------------------------
def test_text_in_a_numeric_feature_is_one_line_naming_file_line_and_feature(served, tmp_path, capsys):
    target, _ = served
    rows_file = CASES / "predict-nonnumeric-traceback" / "rows.jsonl"
    code, out, captured = _predict_cli(target, rows_file, tmp_path, capsys)
    assert code == 2 and not out.exists()  # nothing written, nothing half-scored
    assert captured.err == (f"mdl-tf: error: {rows_file}: line 2, feature 'item_price': value 'abc' is not a number; "
                            f"expected a finite number (e.g. 3.5 or \"3.5\"); leave it empty or null when unknown\n")
    # The same value sent straight to the server (not through our client) is refused there, by name.
    good_row = json.loads(rows_file.read_text().splitlines()[0])
    bad = tf.train.Example.FromString(row_to_example(good_row, _cfg(served[1])))
    bad.features.feature["item_price"].Clear()
    bad.features.feature["item_price"].bytes_list.value.append(b"abc")
    with ServingClient(target, MODEL) as client:
        with pytest.raises(ServingError) as err:
            client.predict_examples([bad.SerializeToString()])
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert ("rejected the input: examples[0], feature 'item_price': holds a bytes_list, the model expects a "
                "float_list") in str(err.value)
        assert len(client.predict([good_row])) == 1  # still serving


def _cfg(servable):
    return from_dict(servable.metadata["feature_config"])


# -- case predict-list-multivalue-silent-oov --------------------------------------------------------------------------
def test_a_json_list_for_a_multi_valued_feature_scores_like_the_joined_form(served, tmp_path, capsys):
    target, servable = served
    rows_file = CASES / "predict-list-multivalue-silent-oov" / "rows.jsonl"
    code, out, _ = _predict_cli(target, rows_file, tmp_path, capsys)
    assert code == 0
    joined, listed = [json.loads(x) for x in out.read_text().splitlines()]
    assert joined == listed
    rows = [json.loads(x) for x in rows_file.read_text().splitlines()]
    local = _local(servable, [row_to_example(rows[0], _cfg(servable))])
    assert joined["click_probability"] == pytest.approx(float(local["click_probability"][0]), abs=1e-6)
    with ServingClient(target, MODEL) as client:  # any other shape is refused by name
        for feature, value, needle in [("item_tags", ["t38", "t8|t9"], "containing the separator '|'"),
                                       ("item_tags", {"t38": 1}, "is an object"),
                                       ("hist_items", [["i16"]], "is a list"),
                                       ("item_id", ["i621"], "takes one value"),
                                       ("itme_id", "i621", "unknown feature(s) ['itme_id']")]:
            with pytest.raises(DataError) as err:
                client.predict([{**rows[0], feature: value}])
            assert needle in str(err.value) and (feature in str(err.value)), str(err.value)


# -- case client-int64-id-float-rounding ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bigint_model(synth_dir, tmp_path_factory):
    """The synthetic data with user 'u<n>' -> 2**53 + n declared `dtype: int`, trained and served."""
    base = tmp_path_factory.mktemp("bigint")
    data = base / "data"
    raw = {**synthetic.FEATURES_YAML, "features": [{**f, "dtype": "int"} if f["name"] == "user_id" else f
                                                   for f in synthetic.FEATURES_YAML["features"]]}
    cfg = from_dict(raw)
    for split in ("train", "eval", "test"):
        frame = pd.read_csv(split_path(synth_dir, split), dtype=str, keep_default_na=False)
        frame["user_id"] = frame["user_id"].map(lambda u: str(2 ** 53 + int(u[1:])))
        (data / split).mkdir(parents=True)
        frame.to_csv(split_path(data, split), index=False)
    from mdl_tf.config import dump

    dump(cfg, data / "features.yaml")
    write_schema(cfg, data)
    train(data, data, base / "model", TrainConfig(epochs=1, batch_size=256, verbose=0), {"d_model": 16})
    server, target, servable = _serve(base / "model" / "saved_model", base / "serving")
    yield cfg, load_stats(base / "model"), target, servable, data
    server.stop(0).wait()


def test_integer_ids_above_2_53_reach_the_model_exactly(bigint_model, tmp_path, capsys):
    cfg, stats, target, servable, data = bigint_model
    vocab = stats["vocabularies"]["user_id"]
    # Two users next to each other above 2**53, both in the vocabulary: through float64 they would collide.
    n = next(int(v) - 2 ** 53 for v in vocab if int(v) % 2 == 0 and str(int(v) + 1) in vocab)
    users = [2 ** 53 + n, 2 ** 53 + n + 1]
    assert float(users[0]) == float(users[1])  # what the old client did to them
    template = read_split(data, "test", cfg).iloc[0][cfg.raw_feature_columns].to_dict()
    rows = [{**template, "user_id": u} for u in users] + [{**template, "user_id": str(users[1])}]
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = _predict_cli(target, rows_file, tmp_path, capsys)
    assert code == 0
    scores = [json.loads(x)["click_probability"] for x in out.read_text().splitlines()]
    with ServingClient(target, MODEL) as client:
        examples = client.examples(rows)
        index = client.predict_tensors({"examples": np.asarray(examples, dtype=object)},
                                       signature="transform_features")["user_id"].tolist()
    assert index[:2] == [FIRST_ID + vocab.index(str(u)) for u in users] and index[0] != index[1]
    assert index[2] == index[1]  # the digits as a string are the same id
    exact = []
    for u in users:  # written straight into the tf.Example, no client in between
        ex = tf.train.Example.FromString(examples[0])
        ex.features.feature["user_id"].int64_list.value[:] = [u]
        exact.append(ex.SerializeToString())
    np.testing.assert_allclose(scores[:2], _local(servable, exact)["click_probability"], atol=1e-6)
    assert scores[0] != scores[1] and scores[2] == scores[1]
    for bad, needle in [(2 ** 63, "out of int64 range"), (float(users[0]), "is a float"), ("u7", "not an integer")]:
        with pytest.raises(DataError, match=needle):
            row_to_example({**template, "user_id": bad}, cfg)


# -- the server names the feature of errors TensorFlow raises in the graph --------------------------------------------
def test_tensorflow_errors_in_the_serving_graph_name_the_feature(served):
    target, servable = served
    cfg = _cfg(servable)
    good = rows_to_examples(pd.DataFrame([synthetic_row(cfg)]), cfg)[0]
    bad = tf.train.Example.FromString(good)
    bad.features.feature["user_age"].Clear()
    bad.features.feature["user_age"].int64_list.value.append(44)
    saved_rules = value_rules(servable)
    servable._value_rules = {}  # as for a SavedModel without mdl metadata: TensorFlow itself refuses the value
    try:
        with ServingClient(target, MODEL) as client:
            with pytest.raises(ServingError) as err:
                client.predict_examples([good, bad.SerializeToString()])
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            message = str(err.value)
            assert "rejected the input: feature 'user_age' of example 1:" in message, message
            assert "Data types don't match" in message and "function_node" not in message, message
            assert client.predict_examples([good])["click_probability"].shape == (1,)
    finally:
        servable._value_rules = saved_rules


def synthetic_row(cfg) -> dict:
    from mdl_tf.serving.warmup import synthetic_rows

    return synthetic_rows(cfg, {}, 1)[0]


# -- fuzzing: rows and raw tf.Examples, valid and mutated -------------------------------------------------------------
MUTATION = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2 ** 65, max_value=2 ** 65), st.floats(), st.text(max_size=6),
    st.sampled_from(["", "abc", "nan", "inf", "1e40", "t1|t2", "|", "1.0", str(2 ** 63), "ü|🙂", "\ud800"]),
    st.lists(st.text(max_size=4) | st.integers(-5, 5), max_size=3), st.dictionaries(st.text(max_size=2), st.none(),
                                                                                      max_size=1))


@pytest.fixture(scope="module")
def base_rows(synth_dir, synth_cfg):
    return read_split(synth_dir, "test", synth_cfg).iloc[:8][synth_cfg.raw_feature_columns].to_dict("records")


@settings(max_examples=fuzz_examples(25))
@given(which=st.integers(0, 7), edits=st.dictionaries(st.sampled_from(sorted(values.serving_rules(
    synthetic.feature_config())) + ["bogus"]), MUTATION, max_size=3), drop=st.booleans())
def test_fuzzed_rows_are_scored_like_in_process_or_refused_by_name(served, base_rows, which, edits, drop):
    target, servable = served
    cfg = _cfg(servable)
    row = dict(base_rows[which])
    if drop and edits:
        row.pop(next(iter(edits)), None)
    else:
        row.update(edits)
    with ServingClient(target, MODEL) as client:
        try:
            examples = client.examples([row])
        except DataError as e:
            assert any(f"'{name}'" in str(e) for name in edits) or "['bogus']" in str(e), (str(e), edits)
            assert str(e).startswith("row 0"), str(e)
        else:
            remote = client.predict_examples(examples)
            local = _local(servable, examples)
            for name, value in remote.items():
                np.testing.assert_allclose(value, local[name], atol=1e-5)
                assert np.isfinite(value).all()
            same = tf.train.Example.FromString(row_to_example(row, cfg))  # one conversion, whoever calls it
            assert tf.train.Example.FromString(examples[0]) == same
        assert client.predict_examples(rows_to_examples(pd.DataFrame(base_rows[:1]), cfg))  # still answering


FEATURE_VALUE = st.one_of(
    st.builds(lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=v)),
              st.lists(st.floats(width=32), max_size=2)),
    st.builds(lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v)),
              st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=2)),
    st.builds(lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)),
              st.lists(st.binary(max_size=4) | st.sampled_from([b"home", b"i1", b"t1|t2", b"\xff"]), max_size=2)))


@settings(max_examples=fuzz_examples(25))
@given(which=st.integers(0, 7), edits=st.dictionaries(st.sampled_from(sorted(values.serving_rules(
    synthetic.feature_config()))), FEATURE_VALUE, max_size=3))
def test_fuzzed_examples_at_the_server_answer_like_in_process_or_invalid_argument(served, base_rows, which, edits):
    target, servable = served
    cfg = _cfg(servable)
    example = tf.train.Example.FromString(row_to_example(base_rows[which], cfg))
    for name, feature in edits.items():
        example.features.feature[name].CopyFrom(feature)
    blob = example.SerializeToString()
    rules = values.serving_rules(cfg)
    with ServingClient(target, MODEL) as client:
        try:
            request_checks.check_examples([blob], rules)
        except DataError as e:
            with pytest.raises(ServingError) as err:
                client.predict_examples([blob])
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and str(e) in str(err.value)
            assert any(f"feature '{name}'" in str(e) for name in edits), str(e)
        else:
            remote = client.predict_examples([blob])
            local = _local(servable, [blob])
            for name, value in remote.items():
                np.testing.assert_allclose(value, local[name], atol=1e-5)
        assert client.predict_examples([row_to_example(base_rows[0], cfg)])  # the next request is answered
