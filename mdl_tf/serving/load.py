"""A bounded gRPC load generator: N Predict requests at a given concurrency, with latency percentiles."""
from __future__ import annotations

import collections
import threading
import time
from concurrent import futures

import numpy as np

from mdl_tf.serving.client import ServingClient, ServingError


def percentiles(latencies_s, qs=(50, 99)) -> dict:
    arr = np.asarray(latencies_s, dtype=np.float64) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 3) for q in qs} if arr.size else {}


def run_load(target: str, model_name: str, serialized: list, requests: int, concurrency: int = 16,
             batch_size: int = 1, timeout: float = 10.0, progress=None) -> dict:
    """Send `requests` Predict calls of `batch_size` examples from `concurrency` threads, one client each.

    Returns counts by status (OK or the gRPC code name), throughput and latency percentiles; nothing is retried
    except UNAVAILABLE, as in the client."""
    if not serialized:
        raise ValueError("the load test needs at least one serialized example")
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies, codes, versions = [], collections.Counter(), collections.Counter()
    pool = list(serialized) * -(-batch_size // len(serialized))  # at least one full batch
    batches = [pool[k:k + batch_size] for k in range(0, len(pool) - batch_size + 1, batch_size)]

    def worker(_):
        client = ServingClient(target, model_name, timeout=timeout)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                started = time.perf_counter()
                try:
                    client.predict_examples(batches[i % len(batches)])
                    code = "OK"
                except ServingError as e:
                    code = e.code.name
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    codes[code] += 1
                    if code == "OK":
                        versions[client.last_version] += 1
                    if progress is not None:
                        progress(1)
        finally:
            client.close()

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    seconds = time.perf_counter() - started
    ok = codes.get("OK", 0)
    return {"requests": requests, "concurrency": concurrency, "batch_size": batch_size, "ok": ok,
            "errors": requests - ok, "status_counts": dict(codes), "versions": dict(sorted(versions.items())), "seconds": round(seconds, 3),
            "requests_per_s": round(requests / seconds, 1), "examples_per_s": round(ok * batch_size / seconds, 1),
            **percentiles(latencies)}
