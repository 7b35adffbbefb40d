"""Distribution strategies for `mdl-tf train` and the TFX Trainer's `run_fn`.

| name                    | cluster                                  | what runs where                                   |
|-------------------------|------------------------------------------|---------------------------------------------------|
| `default`               | none                                     | one process, one device                           |
| `mirrored`              | none                                     | one process, every local GPU (or the CPU)         |
| `multi_worker_mirrored` | TF_CONFIG with `worker` tasks             | every worker runs `mdl-tf train`; worker 0 (or    |
|                         |                                          | the `chief`) evaluates and exports                |
| `parameter_server`      | TF_CONFIG with `chief`, `worker`, `ps`    | the chief runs `mdl-tf train` (the coordinator);  |
|                         |                                          | workers and ps run `mdl-tf cluster-server`        |

Under every strategy the model, both optimizers (RMSprop dense, Adagrad sparse) and the metrics are created inside
`strategy.scope()`. Under `parameter_server` a `MinSizePartitioner` shards every variable larger than
`PS_MIN_SHARD_BYTES` (in practice the embedding tables) over the parameter servers; training is asynchronous, so
the eval-split early stopping of the synchronous strategies is not available there.

Evaluation and export always run on a plain (undistributed) copy of the trained model in the chief process, so
the exported SavedModel is the same whatever strategy trained it.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
import socket
import time

import tensorflow as tf

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "parameter_server")
NEEDS_TF_CONFIG = {"multi_worker_mirrored": ("worker",), "parameter_server": ("chief", "worker", "ps")}
PS_MIN_SHARD_BYTES = 256 << 10
_SHARD_SUFFIX = re.compile(r"/part_\d+(?=:\d+$|$)")  # ParameterServerStrategy names shards <name>/part_<i>


class ClusterConfigError(ValueError):
    """TF_CONFIG is missing or does not describe the cluster the chosen strategy needs."""


def tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({e}); expected "
                                 '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                                 '"index": 0}}') from None
    if not isinstance(conf.get("cluster"), dict) or not isinstance(conf.get("task"), dict):
        raise ClusterConfigError('TF_CONFIG needs both "cluster" and "task" objects, got keys '
                                 f"{sorted(conf)}")
    return conf


def check_cluster(name: str) -> dict:
    """The TF_CONFIG for strategy `name`, with a message naming what is missing when it cannot work."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    conf = tf_config()
    roles = NEEDS_TF_CONFIG.get(name)
    if roles is None:
        return conf
    if not conf:
        raise ClusterConfigError(f"strategy '{name}' needs TF_CONFIG describing the cluster "
                                 f"(task types {list(roles)}); it is not set")
    missing = [r for r in roles if not conf["cluster"].get(r)]
    if missing:
        raise ClusterConfigError(f"strategy '{name}' needs TF_CONFIG cluster entries for {missing}; "
                                 f"got {sorted(conf['cluster'])}")
    _check_addresses(conf)
    return conf


_ADDRESS = re.compile(r"[^\s:]+:[0-9]{1,5}")


def _check_addresses(conf: dict) -> None:
    """Every cluster address is HOST:PORT and the task index is an integer naming one of its type's addresses."""
    for role, addresses in conf["cluster"].items():
        for address in addresses if isinstance(addresses, list) else [addresses]:
            if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
                raise ClusterConfigError(f"TF_CONFIG cluster '{role}' address {address!r} is not HOST:PORT")
    task = conf.get("task") or {}
    index = task.get("index", 0)
    count = len(conf["cluster"].get(task.get("type"), []) or [])
    if isinstance(index, bool) or not isinstance(index, int) or (count and not 0 <= index < count):
        raise ClusterConfigError(f"TF_CONFIG task index {index!r} must be an integer from 0 to {max(count - 1, 0)} "
                                 f"(one of the {count} '{task.get('type')}' addresses)")


def make_strategy(name: str = "default", ps_min_shard_bytes: int = PS_MIN_SHARD_BYTES) -> tf.distribute.Strategy:
    """The strategy `name`; under parameter_server, variables over `ps_min_shard_bytes` are sharded over the ps."""
    conf = check_cluster(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        # No collective timeout: with one, TensorFlow (2.16, CPU) parks a sleeping thread per collective op for the
        # whole timeout, ~10 per training step here, and a worker died of thread exhaustion (EAGAIN) after ~700
        # steps. A peer that dies still surfaces as an error: the coordination service's heartbeat reports it.
        return tf.distribute.MultiWorkerMirroredStrategy()
    task = conf["task"]
    if task.get("type") != "chief":
        raise ClusterConfigError(f"under 'parameter_server' only the chief runs training; this TF_CONFIG task is "
                                 f"{task.get('type')}:{task.get('index')} (run `mdl-tf cluster-server` there)")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=ps_min_shard_bytes, max_shards=len(conf["cluster"]["ps"]))
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


def is_parameter_server(strategy) -> bool:
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def is_chief(strategy) -> bool:
    """Whether this process evaluates and exports: the only process of the local strategies, the PS coordinator,
    and the chief (or worker 0 when there is no chief) of multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or is_parameter_server(strategy) or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def dataset_input(strategy, dataset_fn):
    """What `model.fit` takes under `strategy`. `dataset_fn(input_context)` -> dataset batched at the per-replica
    batch size. Synchronous strategies shard by element (the datasets come from memory, not files)."""
    if is_parameter_server(strategy):
        return tf.keras.utils.experimental.DatasetCreator(dataset_fn)
    ds = dataset_fn(tf.distribute.InputContext())
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def variable_values(variable) -> tf.Tensor:
    """The full value of a (possibly mirrored or sharded) variable."""
    return tf.convert_to_tensor(variable)


def copy_weights(source, target) -> None:
    """Assign every weight of `source` (trained under a strategy) to the same weight of `target` (a plain model
    built with the same architecture). Sharded variables are concatenated back to their full shape."""
    src, dst = list(source.model_weights()), list(target.model_weights())
    values, i = [], 0
    for var in dst:
        if i >= len(src):
            raise ValueError(f"the trained model has fewer weights than the plain copy (stopped at {var.name})")
        value = variable_values(src[i])
        i += 1
        while value.shape[0] is not None and value.shape.rank and value.shape[0] < var.shape[0]:
            value = tf.concat([value, variable_values(src[i])], axis=0)  # consecutive shards of one table
            i += 1
        if value.shape != var.shape:
            raise ValueError(f"weight {var.name}: trained shape {value.shape} differs from the copy's {var.shape}")
        values.append(value)
    if i != len(src):
        raise ValueError(f"the trained model has {len(src) - i} more weight(s) than the plain copy")
    for var, value in zip(dst, values):
        var.assign(value)


def undistributed(model, strategy, build):
    """The model to evaluate and export: `model` itself when no strategy was in use, otherwise a plain copy
    (`build()` outside any strategy scope) holding its trained weights."""
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return model
    plain = build()
    copy_weights(model, plain)
    return plain


def placement(model) -> dict:
    """Where the trained weights lived: how many sit on parameter servers and how many were sharded.

    Keras lists a sharded variable's shards as separate weights (`<name>/part_<i>`); they count as one weight."""
    parts = [p for v in model.model_weights() for p in (getattr(v, "variables", None) or [v])]
    shards_per_weight = collections.Counter(_SHARD_SUFFIX.sub("", p.name) for p in parts)
    return {"weights": len(shards_per_weight), "sharded_weights": sum(n > 1 for n in shards_per_weight.values()),
            "on_parameter_servers": sum("/job:ps" in (p.device or "") for p in parts)}


# -- the servers of a parameter-server cluster -----------------------------------------------------------------
def _reachable(address: str, timeout: float = 1.0) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def run_cluster_server(wait_for_chief_s: float = 600.0, poll_s: float = 1.0) -> int:
    """Serve this TF_CONFIG task (a `worker` or `ps` of a parameter-server cluster) until the chief is done.

    The process ends by itself: 0 once the chief has been up and is gone, 1 if the chief never shows up within
    `wait_for_chief_s`. Returns the exit code."""
    conf = check_cluster("parameter_server")
    task = conf["task"]
    if task.get("type") not in ("worker", "ps"):
        raise ClusterConfigError(f"`mdl-tf cluster-server` runs worker and ps tasks; this TF_CONFIG task is "
                                 f"{task.get('type')} (the chief runs `mdl-tf train --strategy parameter_server`)")
    cluster = tf.train.ClusterSpec(conf["cluster"])
    config = tf.compat.v1.ConfigProto()
    # Each worker runs the coordinator's closures and their remote reads concurrently; with the default pool
    # (one thread per core, 2 here) those can wait on each other forever.
    config.inter_op_parallelism_threads = max(4, len(conf["cluster"]["worker"]) + 1)
    server = tf.distribute.Server(cluster, job_name=task["type"], task_index=task.get("index", 0),
                                  protocol="grpc", config=config, start=True)
    log.info("serving %s:%s at %s", task["type"], task.get("index", 0), server.target)
    chief = conf["cluster"]["chief"][0]
    started, seen = time.time(), False
    while True:
        up = _reachable(chief)
        if up:
            seen = True
        elif seen:
            log.info("chief %s is gone; %s:%s exits", chief, task["type"], task.get("index", 0))
            return 0
        elif time.time() - started > wait_for_chief_s:
            log.error("chief %s did not come up within %.0f s", chief, wait_for_chief_s)
            return 1
        time.sleep(poll_s)
