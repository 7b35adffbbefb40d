"""Serving over TF Serving's gRPC API: the development server, the client, the CLI, bad input and version swaps."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf.cli import main
from mdl_tf.data.io import read_split
from mdl_tf.data.transform import raw_columns
from mdl_tf.serving.client import ServingClient, ServingError
from mdl_tf.serving.examples import rows_to_examples
from mdl_tf.serving.load import run_load
from mdl_tf.serving.model_manager import ModelManager
from mdl_tf.serving.server import make_server

MODEL = "mdl"
MAX_BATCH = 1000
MAX_MESSAGE = 1 << 20


@pytest.fixture(scope="module")
def model_base(synth_model, tmp_path_factory):
    """A small trained MDL in TF Serving's layout: <base>/1/."""
    base = tmp_path_factory.mktemp("served") / "models" / MODEL
    shutil.copytree(synth_model / "saved_model", base / "1")
    return base


@pytest.fixture(scope="module")
def server(model_base):
    manager = ModelManager(model_base, MODEL, poll_seconds=0.2).start()
    srv, port = make_server(manager, port=0, max_batch=MAX_BATCH, max_message_bytes=MAX_MESSAGE)
    srv.start()
    yield f"127.0.0.1:{port}", manager
    srv.stop(0).wait()
    manager.stop()


@pytest.fixture(scope="module")
def rows(synth_dir, synth_cfg):
    return read_split(synth_dir, "test", synth_cfg).iloc[:64]


def _status(call) -> grpc.StatusCode:
    with pytest.raises(ServingError) as err:
        call()
    return err.value


def test_grpc_predictions_equal_in_process_ones(server, model_base, rows, synth_cfg):
    target, _ = server
    loaded = tf.saved_model.load(str(model_base / "1"))
    serialized = rows_to_examples(rows, synth_cfg)
    local = loaded.signatures["serving_default"](examples=tf.constant(serialized))
    with ServingClient(target, MODEL) as client:
        remote = client.predict_examples(serialized)
        as_rows = client.predict(rows.to_dict("records"))  # feature config read from the server's metadata
        raw = client.predict_tensors({k: v for k, v in raw_columns(rows, synth_cfg).items()}, signature="serving_raw")
    assert set(remote) == {"click_probability", "purchase_probability"}
    for name in remote:
        np.testing.assert_allclose(remote[name], local[name].numpy(), atol=1e-5)
        np.testing.assert_allclose([r[name] for r in as_rows], local[name].numpy(), atol=1e-5)
        np.testing.assert_allclose(raw[name], local[name].numpy(), atol=1e-5)


def test_metadata_and_status(server):
    target, _ = server
    with ServingClient(target, MODEL) as client:
        meta = client.metadata(include_mdl=True)
        status = client.status()
    assert meta["version"] == 1
    assert {"serving_default", "serving_raw", "transform_features"} <= set(meta["signatures"])
    assert meta["signatures"]["serving_default"]["inputs"] == {"examples": "string"}
    assert set(meta["signatures"]["serving_default"]["outputs"]) == {"click_probability", "purchase_probability"}
    assert meta["mdl"]["tasks"] == ["click", "purchase"] and meta["mdl"]["scenarios"] == ["home", "feed", "search"]
    assert meta["mdl"]["feature_config_version"] == 1
    assert status == [{"version": 1, "state": "AVAILABLE"}]


def test_bad_requests_get_their_status_and_the_server_keeps_serving(server, rows, synth_cfg):
    target, _ = server
    good = rows_to_examples(rows.iloc[:2], synth_cfg)
    raw = raw_columns(rows.iloc[:2], synth_cfg)
    client = ServingClient(target, MODEL)
    cases = [
        (lambda: ServingClient(target, "nope").predict_examples(good), "NOT_FOUND", "nope"),
        (lambda: client.predict_examples(good, version=99), "NOT_FOUND", "version 99"),
        (lambda: client.predict_tensors({"examples": np.asarray(good, dtype=object)}, signature="scores"),
         "NOT_FOUND", "signature 'scores'"),
        (lambda: client.predict_tensors({k: v for k, v in raw.items() if k != "item_id"}, signature="serving_raw"),
         "INVALID_ARGUMENT", "item_id"),
        (lambda: client.predict_tensors({"examples": np.ones(2, np.float32)}), "INVALID_ARGUMENT", "dtype"),
        (lambda: client.predict_tensors({**raw, "user_age": raw["user_age"].astype(np.int64)},
                                        signature="serving_raw"), "INVALID_ARGUMENT", "user_age"),
        (lambda: client.predict_examples([]), "INVALID_ARGUMENT", "empty batch"),
        (lambda: client.predict_examples([b"not a tf.Example"]), "INVALID_ARGUMENT", "rejected"),
        (lambda: client.predict_examples(good * (MAX_BATCH // 2 + 1)), "RESOURCE_EXHAUSTED", "max batch"),
        (lambda: client.predict_examples([b"x" * (MAX_MESSAGE + 10)]), "RESOURCE_EXHAUSTED", ""),
    ]
    for call, code, needle in cases:
        err = _status(call)
        assert err.code.name == code, (code, str(err))
        assert needle in str(err), (needle, str(err))
        assert client.predict_examples(good)["click_probability"].shape == (2,)  # still serving
    client.close()


def test_client_retries_unavailable_only_and_honours_deadlines(server, rows, synth_cfg):
    target, _ = server
    started = time.perf_counter()
    err = _status(lambda: ServingClient("127.0.0.1:1", MODEL, retries=2, backoff=0.05, timeout=1).status())
    assert err.code == grpc.StatusCode.UNAVAILABLE and time.perf_counter() - started >= 0.15
    client = ServingClient(target, "unknown-model", retries=3, backoff=0.05)
    calls = []
    real = client._prediction.Predict
    client._prediction.Predict = lambda *a, **k: calls.append(1) or real(*a, **k)
    assert _status(lambda: client.predict_examples([b""])).code == grpc.StatusCode.NOT_FOUND
    assert len(calls) == 1  # NOT_FOUND is not retried
    slow = ServingClient(target, MODEL, timeout=1e-4, retries=0)
    examples = rows_to_examples(rows, synth_cfg) * 8
    assert _status(lambda: slow.predict_examples(examples)).code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_corrupt_and_half_written_versions_are_never_loaded(model_base, caplog):
    base = model_base.parent / "corrupt"
    shutil.copytree(model_base / "1", base / "1")
    (base / "5").mkdir()
    (base / "5" / "saved_model.pb").write_bytes(b"\x00garbage")
    (base / "6").mkdir()  # being written: no saved_model.pb yet
    shutil.copytree(model_base / "1" / "variables", base / "6" / "variables")
    with caplog.at_level(logging.ERROR, logger="mdl_tf.serving.model_manager"):
        served = ModelManager(base, MODEL).refresh()
    assert served.version == 1
    assert any("skipping version 5" in r.getMessage() for r in caplog.records)
    assert not any("version 6" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_load_with_a_version_pushed_midway_has_zero_errors(server, model_base, rows, synth_cfg):
    """4,000 batch-1 requests at concurrency 16 (about half a minute here); version 7 is pushed once 500 of them are
    answered, so it lands inside the load on a fast machine as on a slow one (the manager polls every 0.2 s), and
    takes over without a failure."""
    target, manager = server
    serialized = rows_to_examples(rows, synth_cfg)
    result = {}
    answered, started = [0], threading.Event()

    def progress(n):
        answered[0] += n  # run_load calls this under its own lock
        if answered[0] >= 500:
            started.set()

    # A generous deadline: on a busy 2-core machine the swap's model load competes with 16 client threads, and
    # this test is about the swap dropping nothing, not about latency (that is `mdl-tf bench serving`).
    load = threading.Thread(target=lambda: result.update(run_load(target, MODEL, serialized, 4000, 16,
                                                                   timeout=60.0, progress=progress)))
    load.start()
    assert started.wait(timeout=300), "the load never reached 500 answered requests"
    staging = model_base / ".incoming-7"  # a push lands whole: written aside, renamed into place
    shutil.copytree(model_base / "1", staging)
    staging.rename(model_base / "7")
    load.join(timeout=600)
    assert not load.is_alive()
    assert result["errors"] == 0 and result["ok"] == 4000, (result["status_counts"], result)
    assert manager.current.version == 7
    assert result["versions"].get(7, 0) > 0 and result["versions"].get(1, 0) > 0, result["versions"]


def test_predict_cli_jsonl_round_trip(server, rows, synth_cfg, tmp_path, capsys):
    target, _ = server
    inp, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    records = rows.iloc[:10][synth_cfg.raw_feature_columns].to_dict("records")
    inp.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp), "--output", str(out),
                 "--batch-size", "4"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    with ServingClient(target, MODEL) as client:
        expected = client.predict(records)
    assert len(lines) == 10 and all(set(x) == {"click_probability", "purchase_probability"} for x in lines)
    np.testing.assert_allclose([x["click_probability"] for x in lines], [x["click_probability"] for x in expected],
                               atol=1e-6)
    # --keep: a request id (not a feature: never sent) and the user (a feature: sent and copied) lead each line.
    inp.write_text("".join(json.dumps({"request_id": f"r{i}", **r}) + "\n" for i, r in enumerate(records)))
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp), "--output", str(out),
                 "--batch-size", "4", "--keep", "request_id,user_id"]) == 0
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert [list(x)[:2] for x in kept] == [["request_id", "user_id"]] * 10
    assert [(x["request_id"], x["user_id"]) for x in kept] == [(f"r{i}", r["user_id"]) for i, r in enumerate(records)]
    assert [x["click_probability"] for x in kept] == [x["click_probability"] for x in lines]
    capsys.readouterr()
    inp.write_text(json.dumps({"request_id": "r0", **records[0]}) + "\n" + json.dumps(records[1]) + "\n")
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp), "--keep", "request_id"]) == 2
    assert capsys.readouterr().err == (f"mdl-tf: error: {inp}: line 2 has no 'request_id' (--keep copies it into every "
                                       f"output line); add it to every row or leave it out of --keep\n")
    typo = {k: v for k, v in records[0].items() if k != "item_id"}
    inp.write_text(json.dumps({"request_id": "r0", "itme_id": records[0]["item_id"], **typo}) + "\n")
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp), "--keep",
                 "request_id,itme_id"]) == 0  # scored without its item: said, not refused
    assert (f"mdl-tf: warning: mdl_tf.predict: {inp}: the rows have 'itme_id' and no row has 'item_id': --keep copies "
            f"'itme_id' and does not send it, so every row is scored without 'item_id'") in capsys.readouterr().err
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp), "--keep",
                 "request_id,itme_idd"]) == 2  # a misspelt --keep name
    assert f"{inp}: line 1 has no 'itme_idd' (did you mean 'itme_id'?)" in capsys.readouterr().err
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp)]) == 2  # without --keep
    err = capsys.readouterr().err
    assert "unknown feature(s) ['itme_id', 'request_id'] (did you mean 'item_id' for 'itme_id'?)" in err
    assert err.rstrip().endswith("to copy a field that is not a feature into the output, pass --keep request_id")
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp), "--keep", " ,"]) == 2
    assert "--keep ' ,': no field given" in capsys.readouterr().err
    # A pass-through field like an optional feature that rows do hold (device_id beside device): no warning.
    inp.write_text(json.dumps({"device_id": "d1", **records[0]}) + "\n" + json.dumps({"device_id": "d2", **typo,
                                                                                        "item_id": "i1"}) + "\n")
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp), "--keep", "device_id"]) == 0
    assert "warning" not in capsys.readouterr().err
    inp.write_text(json.dumps({"click_probability": 0.5, **records[0]}) + "\n")
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp), "--output", str(out),
                 "--keep", "click_probability"]) == 2
    assert "--keep click_probability: the model's outputs have that name" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 10  # the earlier output stays whole
    inp.write_text(json.dumps(records[0]) + "\n{oops\n")
    assert main(["predict", "--server", target, "--model-name", MODEL, "--input", str(inp)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["predict", "--server", target, "--model-name", "other", "--input", str(tmp_path / "rows.jsonl")]) == 2


def test_serve_cli_answers_and_stops_cleanly_on_sigterm(model_base, rows, synth_cfg):
    import portpicker

    port = portpicker.pick_unused_port()
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mdl_tf.cli", "serve", "--model-base-path", str(model_base),
                             "--model-name", MODEL, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        with ServingClient(f"127.0.0.1:{port}", MODEL, retries=8, backoff=0.5) as client:
            assert client.status()[0]["state"] == "AVAILABLE"
            assert client.predict(rows.iloc[:3].to_dict("records"))[0]["click_probability"] > 0
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "127.0.0.1" in out and "stopped" in out


def test_serve_stops_when_the_signal_lands_on_another_thread(model_base, capsys, caplog):
    """The kernel can hand a process' SIGTERM to a thread other than the main one (gRPC's, TensorFlow's), and Python
    runs the handler only in the main thread. Here the signal lands on a helper thread: the server must notice it
    at once. (A main thread blocked in Event.wait() never did: the helper wakes it after 30 s so the test ends
    either way, and the time to the server's "shutting down" line tells.)"""
    from mdl_tf.serving.server import serve_forever

    caplog.set_level(logging.INFO, logger="mdl_tf.serving.server")
    sent, done = [], threading.Event()

    def ready(_port):
        def from_a_helper_thread():
            time.sleep(1)  # let the main thread settle into its wait: a signal before that is seen on the way
            sent.append(time.time())
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
            if not done.wait(30):
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        threading.Thread(target=from_a_helper_thread, daemon=True).start()

    before = signal.getsignal(signal.SIGTERM)
    try:
        serve_forever(model_base, MODEL, port=0, ready=ready)
    finally:
        done.set()
    noticed = [r.created for r in caplog.records if r.getMessage() == f"signal {int(signal.SIGTERM)}: shutting down"]
    assert len(noticed) == 1 and noticed[0] - sent[0] < 5, (
        f"the server noticed a SIGTERM that landed on another thread {noticed[0] - sent[0]:.0f} s after it came")
    assert capsys.readouterr().out.rstrip().endswith("mdl-tf serve: stopped")
    assert signal.getsignal(signal.SIGTERM) is before


def test_serve_stops_and_restores_the_signal_handlers_when_ready_fails(model_base):
    from mdl_tf.serving.server import serve_forever

    def ready(_port):
        raise RuntimeError("the caller's hook failed")

    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    with pytest.raises(RuntimeError, match="hook failed"):
        serve_forever(model_base, MODEL, port=0, ready=ready)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    failed = []
    worker = threading.Thread(target=lambda: failed.append(pytest.raises(RuntimeError, serve_forever, model_base,
                                                                         MODEL, port=0)))
    worker.start()
    worker.join(60)
    assert failed and "main thread" in str(failed[0].value)


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="no tensorflow_model_server binary on PATH (TF Serving cannot be installed here: no docker "
                           "engine, no Google apt); this contract test runs wherever one is")
def test_client_against_real_tensorflow_model_server(model_base, rows, synth_cfg):
    import portpicker

    port = portpicker.pick_unused_port()
    proc = subprocess.Popen(["tensorflow_model_server", f"--port={port}", f"--model_name={MODEL}",
                             f"--model_base_path={model_base}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with ServingClient(f"127.0.0.1:{port}", MODEL, retries=10, backoff=0.5, feature_config=synth_cfg) as client:
            remote = client.predict(rows.iloc[:8].to_dict("records"))
            assert client.status()[0]["state"] == "AVAILABLE"
            assert "serving_default" in client.metadata()["signatures"]
        local = tf.saved_model.load(str(model_base / "1")).signatures["serving_default"](
            examples=tf.constant(rows_to_examples(rows.iloc[:8], synth_cfg)))
        np.testing.assert_allclose([r["click_probability"] for r in remote], local["click_probability"].numpy(),
                                   atol=1e-5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bench_serving_smoke(model_base, tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "serving", "--model-base-path", str(model_base), "--model-name", MODEL, "--iterations",
                 "5", "--load-requests", "40", "--concurrency", "4", "--out", str(out)]) == 0
    result = json.loads((out / "serving.json").read_text())
    assert [r["batch_size"] for r in result["in_process"]] == [1, 64, 512]
    assert [r["batch_size"] for r in result["grpc"]] == [1, 64, 512]
    assert result["load"]["ok"] == 40 and result["load"]["errors"] == 0
    assert set(result["targets"]) == {"in_process_batch1_p99_ms", "grpc_batch1_p99_ms"}
    assert "machine" in result and result["command"].startswith("mdl-tf bench serving")
