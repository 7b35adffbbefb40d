"""`mdl-tf bench serving`: latency percentiles and throughput of a served model at batch 1, 64 and 512, called
in-process (the SavedModel signature) and over gRPC (`mdl-tf serve` in its own process on loopback, as clients meet
it), plus a bounded load test against that server.

Targets (MDL issue 6, on our 2-core machines): in-process batch-1 p99 < 5 ms, gRPC batch-1 p99 < 10 ms.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from mdl_tf import config as cfgmod
from mdl_tf.bench.machine import machine_info
from mdl_tf.serving.examples import rows_to_examples
from mdl_tf.serving.load import percentiles, run_load
from mdl_tf.utils import write_json

BATCH_SIZES = (1, 64, 512)
TARGET_P99_MS = {"in_process": 5.0, "grpc": 10.0}


def _examples(servable, data, count: int = 512) -> list:
    import pandas as pd

    from mdl_tf.serving.warmup import synthetic_rows

    cfg = cfgmod.from_dict(servable.metadata["feature_config"], f"{servable.path} metadata")
    if data:
        from mdl_tf.data.io import read_split

        frame = read_split(data, "test", cfg).iloc[:count]
    else:
        frame = pd.DataFrame(synthetic_rows(cfg, {}, count))
    out = rows_to_examples(frame, cfg)
    return (out * -(-count // len(out)))[:count]


def time_calls(call, batches: list, iterations: int) -> dict:
    for b in batches[:3]:
        call(b)  # warm up (tracing, lookup tables)
    lat = []
    for i in range(iterations):
        start = time.perf_counter()
        call(batches[i % len(batches)])
        lat.append(time.perf_counter() - start)
    size = len(batches[0])
    return {"batch_size": size, "calls": iterations, **percentiles(lat),
            "examples_per_s": round(size * iterations / sum(lat), 1)}


@contextlib.contextmanager
def server_process(base_path, model_name: str):
    """`mdl-tf serve` in its own process on a free loopback port (as a client would meet it: no shared GIL)."""
    import portpicker

    from mdl_tf.serving.client import ServingClient, ServingError

    port = portpicker.pick_unused_port()
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "mdl_tf.cli", "serve", "--model-base-path", str(base_path),
                             "--model-name", model_name, "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        with ServingClient(f"127.0.0.1:{port}", model_name, retries=10, backoff=0.5) as client:
            try:
                client.status()  # waits (retrying UNAVAILABLE) until the server answers
            except ServingError as e:
                log.seek(0)
                raise RuntimeError(f"`mdl-tf serve` did not come up ({e}); its output:\n{log.read()[-2000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        log.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_serving_bench(base_path, model_name: str, out_dir, data=None, iterations: int = 200,
                      load_requests: int = 20000, concurrency: int = 16) -> dict:
    from mdl_tf.serving.client import ServingClient
    from mdl_tf.serving.model_manager import ModelManager

    servable = ModelManager(base_path, model_name).refresh()
    if servable is None:
        raise cfgmod.ConfigError(f"{base_path}: no loadable version directory (<base>/<version>/saved_model.pb)")
    examples = _examples(servable, data)
    fn = servable.signatures["serving_default"]
    result = {"machine": machine_info(), "model": {"name": model_name, "version": servable.version,
                                                    "path": str(servable.path)},
              "in_process": [], "grpc": []}
    with server_process(base_path, model_name) as target:
        client = ServingClient(target, model_name)
        for size in tqdm(BATCH_SIZES, desc="batch sizes", unit="size", disable=None):
            batches = [examples[k:k + size] for k in range(0, len(examples) - size + 1, size)]
            calls = max(20, iterations // (1 if size == 1 else 4))
            result["in_process"].append(time_calls(lambda b: fn(examples=tf.constant(b)), batches, calls))
            result["grpc"].append(time_calls(client.predict_examples, batches, calls))
        client.close()
        if load_requests:
            with tqdm(total=load_requests, desc="load test", unit="req", mininterval=1.0, disable=None) as bar:
                result["load"] = run_load(target, model_name, examples, load_requests, concurrency,
                                          progress=bar.update)
    for where, target in TARGET_P99_MS.items():
        p99 = result[where][0]["p99_ms"]
        result.setdefault("targets", {})[f"{where}_batch1_p99_ms"] = {"target": target, "measured": p99,
                                                                     "met": bool(p99 < target)}
    result["command"] = (f"mdl-tf bench serving --model-base-path {base_path} --model-name {model_name}"
                         + (f" --data {data}" if data else "") + f" --iterations {iterations} --load-requests "
                         f"{load_requests} --concurrency {concurrency}")
    write_json(Path(out_dir) / "serving.json", result)
    return result
