"""The TFX pipeline end to end (LocalDagRunner on small synthetic data), its Kubeflow V2 compile, and bad input.

TFX and TFMA are imported inside the tests (TFX alone takes seconds): every xdist worker imports this module to
collect it, and only the one that runs the pipeline group needs them."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mdl_tf.cli import main
from mdl_tf.data import synthetic
from mdl_tf.serving.warmup import WARMUP_FILE, read_warmup_requests
from tfx_pipeline import artifacts
from tests.conftest import REPO
from tests.conftest import SYNTH_SCHEMA as SCHEMA
from tests.conftest import run_pipeline as _run


def _custom_config(model_uri):
    meta = json.loads((Path(model_uri) / "Format-Serving" / "assets.extra" / "mdl_metadata.json").read_text())
    return {"feature_config": meta["feature_config"], "model": meta["model"], "hparams": meta["hparams"]}


@pytest.mark.slow
def test_two_runs_push_two_blessed_versions_and_reuse_the_cache(pipeline_runs):
    _, root, first = pipeline_runs
    versions = artifacts.pushed_versions(root / "serving", "mdl")
    assert len(first) == 1 and len(versions) == 2 and versions[0].name == first[0]
    blessings = artifacts.artifacts(root, "ModelBlessing")
    assert [b["properties"].get("blessed") for b in blessings] == [1, 1]
    # ExampleGen and Transform ran once: the second run took them from the cache.
    assert len(artifacts.artifacts(root, "Examples")) == 2  # raw + transformed examples of the first run
    assert len(artifacts.artifacts(root, "TransformGraph")) == 1
    assert len(artifacts.artifacts(root, "Model")) == 2
    runs = [json.loads(Path(r["uri"], "metrics.json").read_text()) for r in artifacts.artifacts(root, "ModelRun")]
    assert [(r["model"], r["train"]["strategy"]) for r in runs] == [("mdl", "default"), ("mmoe", "mirrored")]


@pytest.mark.slow
def test_evaluator_holds_per_scenario_per_task_metrics_against_a_baseline(pipeline_runs):
    import tensorflow_model_analysis as tfma

    _, root, _ = pipeline_runs
    uri = artifacts.latest_evaluation(root)["uri"]
    assert tfma.load_validation_result(uri).validation_ok
    result = tfma.load_eval_result(uri, model_name=tfma.CANDIDATE_KEY)
    slices = {s for s, _ in result.slicing_metrics}
    expected = {()} | {(("scenario", s),) for s in synthetic.SCENARIOS} | {(("device", d),) for d in ("ios",
                                                                                                  "android")}
    assert expected <= slices
    for slice_key, metrics in result.slicing_metrics:
        if slice_key in expected:
            for task in ("click", "purchase"):
                head = metrics[f"{task}_probability"][""]
                assert {"auc", "auc_precision_recall", "binary_crossentropy", "calibration", "example_count",
                        "mean_label", "mean_prediction"} <= set(head)
                assert 0.0 <= head["auc"]["doubleValue"] <= 1.0
    # The second run had a blessed baseline: the metrics carry candidate-vs-baseline differences.
    diffs = tfma.load_metrics(uri)
    assert any("is_diff: true" in str(m) for m in diffs)


@pytest.mark.slow
def test_served_predictions_equal_the_trainers_on_raw_examples(pipeline_runs):
    """Pushed serving_default on raw tf.Examples == the Trainer's model on TF Transform's own transform."""
    import tensorflow_transform as tft

    from tfx_pipeline.models.model import WEIGHTS, build_from_transform

    _, root, _ = pipeline_runs
    pushed = artifacts.pushed_versions(root / "serving", "mdl")[-1]
    model_uri = artifacts.latest(root, "Model")["uri"]
    run_uri = artifacts.latest(root, "ModelRun")["uri"]
    tft_output = tft.TFTransformOutput(artifacts.latest(root, "TransformGraph")["uri"])
    raw_uri = artifacts.artifacts(root, "Examples")[0]["uri"]
    files = [str(p) for p in Path(raw_uri, "Split-eval").glob("*.gz")]
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(200)]

    served = tf.saved_model.load(str(pushed)).signatures["serving_default"](examples=tf.constant(serialized))

    custom = _custom_config(model_uri)
    model, cfg, _, _ = build_from_transform(tft_output, custom)
    model.load_weights(str(Path(run_uri) / WEIGHTS)).expect_partial()
    spec = {k: v for k, v in tft_output.raw_feature_spec().items() if k not in cfg.label_columns}
    transformed = tft_output.transform_raw_features(tf.io.parse_example(serialized, spec))
    trainer = model(transformed, training=False)
    for task in cfg.task_names:
        np.testing.assert_allclose(served[f"{task}_probability"].numpy(), trainer[task].numpy(), atol=1e-5)
    assert served["click_probability"].shape == (200,)


@pytest.mark.slow
def test_push_carries_tft_assets_and_replayable_warmup_requests(pipeline_runs):
    _, root, _ = pipeline_runs
    pushed = artifacts.pushed_versions(root / "serving", "mdl")[-1]
    assert (pushed / "assets" / "vocab_user_id").exists()
    requests = read_warmup_requests(pushed / "assets.extra" / WARMUP_FILE)
    assert requests and all(r.model_spec.signature_name == "serving_default" for r in requests)
    fn = tf.saved_model.load(str(pushed)).signatures["serving_default"]
    for r in requests:
        out = fn(examples=tf.constant(tf.make_ndarray(r.inputs["examples"])))
        assert set(out) == {"click_probability", "purchase_probability"}


@pytest.mark.slow
def test_hashed_ids_need_no_vocabulary_and_serve_the_in_process_buckets(pipeline_runs):
    """The synthetic config hashes item_id and hist_items: the Transform writes no vocabulary for them, the Trainer
    sizes their shared table from hash_buckets, and the pushed model's bucket of every raw value is the one
    `mdl-tf train`'s transform (mdl_tf.data.transform.hash_ids) gives it."""
    from mdl_tf.data.transform import FIRST_ID, OOV_ID, hash_ids
    from mdl_tf.serving.examples import rows_to_examples

    data, root, _ = pipeline_runs
    cfg = synthetic.feature_config()
    buckets = cfg.feature("item_id").hash_buckets
    transform_dir = Path(artifacts.latest(root, "TransformGraph")["uri"]) / "transform_fn" / "assets"
    pushed = artifacts.pushed_versions(root / "serving", "mdl")[-1]
    for assets in (transform_dir, pushed / "assets"):
        names = {p.name for p in assets.iterdir()}
        assert "vocab_user_id" in names and not {"vocab_item_id", "vocab_hist_items"} & names, names
    meta = json.loads((pushed / "assets.extra" / "mdl_metadata.json").read_text())
    assert meta["vocab_sizes"]["item_id"] == meta["vocab_sizes"]["hist_items"] == buckets + FIRST_ID
    rows = pd.read_csv(data / "eval" / "data.csv", dtype=str, keep_default_na=False).iloc[:40]
    rows.loc[0, "item_id"] = ""
    rows.loc[1, "item_id"] = "an-item-nobody-has-seen"
    out = tf.saved_model.load(str(pushed)).signatures["transform_features"](
        examples=tf.constant(rows_to_examples(rows, cfg)))
    ids = out["item_id"].numpy()
    assert ids[0] == OOV_ID
    np.testing.assert_array_equal(ids[1:], hash_ids(tf.constant(rows["item_id"].iloc[1:].tolist()), buckets).numpy())
    last = [h.split("|")[-1] for h in rows["hist_items"]]
    lengths = (out["hist_items"].numpy() > 0).sum(axis=1)
    for i, (token, n) in enumerate(zip(last, lengths)):
        if token:
            assert out["hist_items"].numpy()[i, n - 1] == hash_ids(tf.constant([token]), buckets).numpy()[0]


@pytest.mark.slow
def test_bad_input_stops_before_anything_runs_and_keeps_pushed_models(pipeline_runs, tmp_path, capsys):
    data, root, _ = pipeline_runs
    before = sorted(p.name for p in artifacts.pushed_versions(root / "serving", "mdl"))
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    frame = pd.read_csv(bad / "train" / "data.csv", dtype=str, keep_default_na=False)
    frame.drop(columns=["item_price"]).to_csv(bad / "train" / "data.csv", index=False)
    assert _run(bad, root, "--train-steps", "10") == 2
    err = capsys.readouterr().err
    assert "item_price" in err and "train/data.csv" in err
    assert sorted(p.name for p in artifacts.pushed_versions(root / "serving", "mdl")) == before


def test_bad_input_errors_name_the_column_and_the_file(synth_dir, tmp_path, capsys):
    def check(mutate, *needles):
        bad = tmp_path / f"case{check.n}"
        check.n += 1
        shutil.copytree(synth_dir, bad)
        mutate(bad)
        assert _run(bad, tmp_path / "root", "--train-steps", "10") == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, (needle, err)
    check.n = 0

    def frame_edit(split, fn):
        def mutate(d):
            path = d / split / "data.csv"
            fn(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)
        return mutate

    check(lambda d: [p.unlink() for p in (d / "train").glob("*.csv")], "train", "no CSV file")
    check(frame_edit("train", lambda f: f.assign(item_price="cheap")), "item_price", "not a number", "data.csv")
    check(frame_edit("train", lambda f: f.assign(click="")), "click", "every label is missing")
    check(frame_edit("eval", lambda f: f.assign(device="7")), "device", "only integers", "dtype: int")
    assert not (tmp_path / "root" / "serving").exists()


def _write_tfrecords(csv_dir, out_dir, cfg):
    """The CSV splits as tf.Example TFRecords (the same columns, one value per feature, empty cells left out)."""
    numeric = {f.name for f in cfg.features_of_kind("numeric")}
    ints = set(cfg.label_columns) | {cfg.time_column}
    for split in ("train", "eval"):
        frame = pd.read_csv(csv_dir / split / "data.csv", dtype=str, keep_default_na=False)
        (out_dir / split).mkdir(parents=True)
        with tf.io.TFRecordWriter(str(out_dir / split / "data.tfrecord")) as w:
            for rec in frame.to_dict("records"):
                feats = {}
                for col, v in rec.items():
                    if v == "":
                        continue
                    if col in numeric:
                        feats[col] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
                    elif col in ints:
                        feats[col] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(float(v))]))
                    else:
                        feats[col] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


@pytest.mark.slow
def test_fail_on_anomalies_stops_before_training(synth_dir, synth_cfg, tmp_path, capsys):
    """TFRecord input (ImportExampleGen) whose eval split is full of a scenario the schema's domain does not list:
    the anomaly is reported and the run stops before the Transform and the Trainer."""
    bad = tmp_path / "anomalous"
    shutil.copytree(synth_dir, bad)
    for split, rows in (("train", 1000), ("eval", 200)):  # a few rows suffice: the anomaly is in the value domain
        path = bad / split / "data.csv"
        frame = pd.read_csv(path, dtype=str, keep_default_na=False).iloc[:rows]
        if split == "eval":
            frame = frame.assign(scenario="live", scenarios="live")
        frame.to_csv(path, index=False)
    _write_tfrecords(bad, tmp_path / "records", synth_cfg)
    assert _run(tmp_path / "records", tmp_path / "root", "--train-steps", "10", "--fail-on-anomalies",
                "--input-format", "tfrecord") == 2
    err = capsys.readouterr().err
    assert "anomal" in err and "'scenario'" in err and "eval" in err
    assert len(artifacts.artifacts(tmp_path / "root", "Examples")) == 1  # ExampleGen's; no transformed examples
    assert not artifacts.artifacts(tmp_path / "root", "Model")


def test_kubeflow_v2_compile_names_every_component(tmp_path, capsys):
    out = tmp_path / "kfp" / "pipeline.json"
    assert main(["pipeline", "compile", "--target", "kubeflow-v2", "--image", "registry.example/mdl-tf:0.1",
                 "--out", str(out), "--schema", SCHEMA, "--data", "gs://bucket/data", "--root", "gs://bucket/root",
                 "--serving-root", "gs://bucket/serving", "--model", "mdl"]) == 0
    spec = json.loads(out.read_text())["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "mdl-tf"
    tasks = spec["root"]["dag"]["tasks"]
    for name in ("CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomaliesGate",
                 "Transform", "Trainer", "Evaluator", "Pusher"):
        assert name in tasks, name
    assert "blessed" in tasks["Pusher"]["triggerPolicy"]["condition"]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
    assert images == {"registry.example/mdl-tf:0.1"}
    assert "pipeline.json" in capsys.readouterr().out


def test_kubeflow_compile_carries_the_beam_profile_and_training_strategy(tmp_path):
    from tfx_pipeline.local_runner import PROFILES

    out = tmp_path / "pipeline.json"
    assert main(["pipeline", "compile", "--image", "registry.example/mdl-tf:0.1", "--out", str(out), "--schema",
                 SCHEMA, "--data", "gs://b/d", "--root", "gs://b/r", "--serving-root", "gs://b/s",
                 "--beam-args", str(PROFILES / "dataflow.yaml"), "--strategy", "mirrored"]) == 0
    text = out.read_text()
    assert "--runner=DataflowRunner" in text and "--temp_location=gs://" in text
    assert "direct_running_mode" not in text, "local DirectRunner flags never reach the cluster"
    assert '\\"strategy\\": \\"mirrored\\"' in text


def test_committed_kubeflow_example_is_a_complete_pipeline():
    spec = json.loads((Path(REPO) / "deploy" / "kubeflow" / "mdl-tf-pipeline.json").read_text())["pipelineSpec"]
    assert {"CsvExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= set(spec["root"]["dag"]["tasks"])


def test_trainer_settings_are_refused_before_any_component_runs(tmp_path, capsys):
    """What the Trainer would refuse (a hyperparameter name, a training setting) stops `pipeline run` before its data
    is read and `pipeline compile` before a spec is written, naming the flag; `custom_config.train` names its key."""
    from mdl_tf.errors import InvalidSetting
    from tfx_pipeline.models.model import train_config_from

    assert train_config_from({"model": "mmoe", "train": {"dense_lr": 2e-3}}).dense_lr == 2e-3
    with pytest.raises(InvalidSetting, match=r"^custom_config\.train\.warmup_steps: warmup_steps must be >= 0"):
        train_config_from({"train": {"warmup_steps": -5}})
    with pytest.raises(InvalidSetting, match=r"custom_config\.train has unknown key\(s\) \['dense_rate'\]"):
        train_config_from({"train": {"dense_rate": 1e-3}})
    out = tmp_path / "pipeline.json"
    assert main(["pipeline", "compile", "--image", "registry.example/mdl-tf:0.1", "--out", str(out), "--schema",
                 SCHEMA, "--data", "gs://b/d", "--root", "gs://b/r", "--serving-root", "gs://b/s", "--hparam",
                 "attn_headz=2"]) == 2
    assert "mdl-tf: error: --hparam attn_headz=2: mdl has no hyperparameter attn_headz (did you mean attn_heads?)" \
        in capsys.readouterr().err
    assert not out.exists()
    root = tmp_path / "root"
    assert main(["pipeline", "run", "--data", str(tmp_path / "no_data"), "--schema", SCHEMA, "--root", str(root),
                 "--model", "mmoe", "--hparam", "num_expert=2"]) == 2  # refused before the (missing) data is read
    assert "--hparam num_expert=2: mmoe has no hyperparameter num_expert (did you mean num_experts?)" in \
        capsys.readouterr().err
    assert not (root / "pipeline").exists()

    from tfx_pipeline.local_runner import run

    with pytest.raises(InvalidSetting, match="unknown model 'mmoee'; available: ") as caught:
        run(tmp_path / "no_data", SCHEMA, root, model="mmoee")  # the runner's Python API, without the CLI's choices
    assert caught.value.setting == "model" and not (root / "pipeline").exists()


def test_kubeflow_names_must_be_hyphenated(tmp_path):
    with pytest.raises(Exception, match="name"):
        main(["pipeline", "compile", "--image", "i", "--out", str(tmp_path / "p.json"), "--schema", SCHEMA,
              "--data", "d", "--root", "r", "--serving-root", "s", "--name", "mdl_tf"])


def test_an_edited_schema_is_a_new_import_path(tmp_path):
    from tfx_pipeline.local_runner import versioned_schema

    schema_dir = tmp_path / "schema"
    shutil.copytree(SCHEMA, schema_dir)
    first = versioned_schema(schema_dir, tmp_path / "root")
    assert versioned_schema(schema_dir, tmp_path / "root") == first  # unchanged: same path, cache hit
    path = schema_dir / "schema.pbtxt"
    path.write_text(path.read_text().replace('name: "device"', 'name: "device"\n  annotation { tag: "x" }'))
    second = versioned_schema(schema_dir, tmp_path / "root")
    assert second != first and second.read_text() == path.read_text() and first.exists()


def test_a_schema_not_regenerated_after_features_yaml_changed_stops_the_run_before_the_data(tmp_path, capsys):
    """features.yaml edited (a column's dtype), schema.pbtxt not: the run stops at once naming the column, both types
    and the command that regenerates it (it once warned in ExampleValidator, then failed in the Transform with a
    100-line Beam traceback); after that command the schema matches again."""
    from mdl_tf import config as cfgmod
    from mdl_tf.schema import check_schema_file

    schema_dir = tmp_path / "schema"
    shutil.copytree(SCHEMA, schema_dir)
    yaml_path = schema_dir / "features.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("name: hour\n", "name: hour\n  dtype: int\n", 1))
    assert cfgmod.load(schema_dir).feature("hour").dtype == "int"
    assert _run_with_schema(schema_dir / "features.yaml", tmp_path / "root") == 2  # a file names its folder
    err = capsys.readouterr().err.strip()
    assert err == (f"mdl-tf: error: {schema_dir / 'schema.pbtxt'}: out of date with features.yaml: 'hour' is BYTES, "
                   f"features.yaml makes it INT; regenerate it: mdl-tf schema export --schema {schema_dir} (it keeps "
                   f"the old file as schema.pbtxt.bak: copy back any hand or TFDV edits), or fix those columns by "
                   f"hand"), err
    assert not (tmp_path / "root").exists()  # stopped before anything was written
    assert main(["pipeline", "compile", "--image", "i", "--out", str(tmp_path / "p.json"), "--schema", str(schema_dir),
                 "--data", "gs://d", "--root", "gs://r", "--serving-root", "gs://s"]) == 2  # the image ships it
    assert "out of date with features.yaml: 'hour' is BYTES" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()
    stale = (schema_dir / "schema.pbtxt").read_text()
    assert main(["schema", "export", "--schema", str(schema_dir)]) == 0
    assert f"kept the previous schema.pbtxt, which differed, as {schema_dir / 'schema.pbtxt.bak'}" in \
        capsys.readouterr().out
    assert (schema_dir / "schema.pbtxt.bak").read_text() == stale  # curated edits are never lost
    check_schema_file(cfgmod.load(schema_dir), schema_dir / "schema.pbtxt")
    assert main(["schema", "export", "--schema", str(schema_dir)]) == 0  # unchanged: no backup line
    assert "kept" not in capsys.readouterr().out
    # A curated schema (TFDV gives an always-filled column a shape, adds domains) is not "out of date".
    curated = (schema_dir / "schema.pbtxt").read_text().replace(
        'name: "device"\n  value_count {\n    min: 0\n    max: 1\n  }', 'name: "device"\n  shape { dim { size: 1 } }')
    assert curated.count("shape {") == 2  # the scenario column's and device's
    (schema_dir / "schema.pbtxt").write_text(curated)
    check_schema_file(cfgmod.load(schema_dir), schema_dir / "schema.pbtxt")
    assert main(["schema", "export", "--schema", str(schema_dir), "--dataset", "synthetic"]) == 2
    assert "give --schema alone" in capsys.readouterr().err
    assert main(["schema", "export", "--schema", str(schema_dir / "features.yaml")]) == 0  # the file names its folder
    assert capsys.readouterr().out.startswith(str(schema_dir / "schema.pbtxt"))


def _run_with_schema(schema_dir, root):
    return main(["pipeline", "run", "--data", "/nonexistent", "--schema", str(schema_dir), "--root", str(root),
                 "--train-steps", "5"])


def test_a_model_that_is_not_blessed_is_told_why(tmp_path):
    """The Evaluator's failed thresholds, read from its validations file, become one sentence each: the task, its AUC
    and the flag that set the bound (a run printed only "blessed": false)."""
    from tensorflow_model_analysis.proto import validation_result_pb2

    from tfx_pipeline.local_runner import not_blessed_because

    result = validation_result_pb2.ValidationResult(validation_ok=False)
    overall = result.metric_validations_per_slice.add()
    for output, diff, value in (("purchase_probability", False, 0.0), ("click_probability", True, -0.0312)):
        failure = overall.failures.add()
        failure.metric_key.name, failure.metric_key.output_name, failure.metric_key.is_diff = "auc", output, diff
        failure.metric_value.double_value.value = value
    result.missing_slices.add().feature_keys.append("scenario")
    with tf.io.TFRecordWriter(str(tmp_path / "validations.tfrecord")) as w:
        w.write(result.SerializeToString())
    assert not_blessed_because(tmp_path, 0.55, 0.01) == [
        "purchase: auc 0.0000 is below --auc-floor 0.55 (0 is what the Evaluator reports when the eval rows hold one "
        "class)",
        "click: auc changed by -0.0312 against the blessed model, more than --max-auc-drop 0.01 allows",
        f"thresholds or slices of the eval config had no metrics to check (see {tmp_path})"]
    assert not_blessed_because(tmp_path / "nowhere", 0.55, 0.01)[0].startswith(
        "the Evaluator's validation result could not be read (")


def test_beam_profiles(tmp_path):
    from tfx_pipeline.local_runner import beam_args

    assert beam_args(1) == []  # Beam's default in-memory DirectRunner: no flag, so TFX packages nothing for Beam
    assert beam_args(3)[1] == "--direct_num_workers=3"
    f = tmp_path / "flink.yaml"
    f.write_text("runner: FlinkRunner\nflink_master: localhost:8081\n")
    assert beam_args(1, f) == ["--runner=FlinkRunner", "--flink_master=localhost:8081"]
    f.write_text("experiments: beam_fn_api\n")  # no runner of its own: added to the local DirectRunner flags
    assert beam_args(2, f) == ["--direct_running_mode=multi_processing", "--direct_num_workers=2",
                               "--experiments=beam_fn_api"]
    f.write_text("- runner=oops\n")
    with pytest.raises(Exception, match="--flag=value"):
        beam_args(1, f)


def test_beam_pickling_stops_resetting_every_logger(monkeypatch):
    """Beam's pickler calls dill's `_trace(False)` after every pickle; unpatched that is a Logger.setLevel each time,
    which clears every logger's cache (seconds per pipeline run). After quiet_dill_trace the level is set once."""
    import logging

    from apache_beam.internal import dill_pickler

    from tfx_pipeline.local_runner import quiet_dill_trace

    quiet_dill_trace()
    quiet_dill_trace()  # idempotent
    dill_pickler.loads(dill_pickler.dumps({"a": 1}))  # the level is WARN from here on
    calls = []
    set_level = logging.Logger.setLevel
    monkeypatch.setattr(logging.Logger, "setLevel", lambda self, level: (calls.append(self.name),
                                                                          set_level(self, level)))
    for i in range(3):
        assert dill_pickler.loads(dill_pickler.dumps({"a": i})) == {"a": i}
    assert calls == [] and logging.getLogger("dill").level == logging.WARN


@pytest.mark.parametrize("profile, runner, view", [
    ("direct_multiprocess", "DirectRunner", "DirectOptions"),
    ("flink", "FlinkRunner", "FlinkRunnerOptions"),
    ("spark", "SparkRunner", "SparkRunnerOptions"),
    ("dataflow", "DataflowRunner", "GoogleCloudOptions"),
])
def test_shipped_beam_profiles_build_valid_pipeline_options(profile, runner, view):
    """Every shipped profile parses into Beam PipelineOptions with no flag Beam does not know."""
    import yaml
    from apache_beam.options import pipeline_options as po

    from tfx_pipeline.local_runner import PROFILES, beam_args

    path = PROFILES / f"{profile}.yaml"
    args = beam_args(1, path)
    options = po.PipelineOptions(args)
    assert options.view_as(po.StandardOptions).runner == runner
    known = options.get_all_options(retain_unknown_options=False)
    for key in yaml.safe_load(path.read_text()):
        assert key in known, f"{path.name}: Beam does not know --{key}"
    assert options.view_as(getattr(po, view)) is not None
    if profile == "dataflow":
        gcp = options.view_as(po.GoogleCloudOptions)
        assert gcp.temp_location.startswith("gs://") and gcp.region
    if profile == "direct_multiprocess":
        assert options.view_as(po.DirectOptions).direct_running_mode == "multi_processing"
