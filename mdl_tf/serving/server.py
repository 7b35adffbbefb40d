"""A development PredictionService: TF Serving's gRPC API (the official protos) served in-process.

`mdl-tf serve --model-base-path DIR --model-name NAME --port 8500` is for development and tests, where no
`tensorflow_model_server` can run; production is TF Serving itself (see serving/ and the README). It implements
PredictionService.Predict and GetModelMetadata and ModelService.GetModelStatus for one model, loads the newest version
under the base path and picks up newer ones while serving.

Errors follow TF Serving's codes: unknown model, version or signature -> NOT_FOUND; a missing or unknown input, a
wrong dtype or rank, an empty batch, examples the signature cannot parse, or a value that breaks the value contract
of `mdl_tf.values` (checked before the model runs, naming the example and feature) -> INVALID_ARGUMENT; a batch above
`max_batch_size` or a message above `max_message_bytes` -> RESOURCE_EXHAUSTED. A bad request never affects the next.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from mdl_tf import config as cfgmod
from mdl_tf import values
from mdl_tf.errors import DataError
from mdl_tf.serving import request_checks
from mdl_tf.serving.model_manager import ModelManager

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"
MDL_METADATA_FIELD = "mdl_metadata"  # our extension: assets.extra/mdl_metadata.json as a StringValue (JSON)
DEFAULT_MAX_BATCH = 8192
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
EXAMPLES_INPUT = "examples"
SIGNAL_POLL_SECONDS = 0.2  # how soon `serve_forever` notices SIGTERM/SIGINT


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _resolve(manager: ModelManager, model_spec):
    if model_spec.name != manager.model_name:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"Servable not found for request: model '{model_spec.name}' is not served here "
                           f"(this server serves '{manager.model_name}')")
    servable = manager.current
    if servable is None:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"model '{manager.model_name}' has no loadable version under "
                                                      f"{manager.base_path}")
    if model_spec.HasField("version") and model_spec.version.value != servable.version:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"model '{manager.model_name}' version {model_spec.version.value} is not loaded; "
                           f"the served version is {servable.version}")
    if model_spec.version_label:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"version label '{model_spec.version_label}' is unknown "
                                                      f"(the development server has no version labels)")
    return servable


def _inputs(servable, signature: str, request, max_batch: int) -> dict:
    if signature not in servable.signatures:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"signature '{signature}' not found in model '{request.model_spec.name}' version "
                           f"{servable.version}; available: {sorted(servable.signatures)}")
    specs = servable.input_specs(signature)
    missing = sorted(set(specs) - set(request.inputs))
    unknown = sorted(set(request.inputs) - set(specs))
    if missing or unknown:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"signature '{signature}' expects inputs {sorted(specs)}; missing {missing}, "
                           f"unknown {unknown}")
    out, sizes = {}, set()
    for name, spec in specs.items():
        proto = request.inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input '{name}' has dtype {tf.dtypes.as_dtype(proto.dtype).name}, signature "
                               f"'{signature}' expects {spec.dtype.name}")
        try:
            value = tf.make_ndarray(proto)
        except Exception as e:  # noqa: BLE001
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}' is not a valid tensor: {e}")
        if value.ndim != len(spec.shape):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input '{name}' has shape {list(value.shape)}, signature expects rank "
                               f"{len(spec.shape)} ({spec.shape})")
        sizes.add(value.shape[0] if value.ndim else 1)
        out[name] = value
    if len(sizes) > 1:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"inputs disagree on the batch size: {sorted(sizes)}")
    batch = sizes.pop()
    if batch == 0:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "empty batch: send at least one example")
    if batch > max_batch:
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"batch of {batch} exceeds the server's max batch size {max_batch}; split the request")
    return out


def _known(requested: set, available: set, field: str) -> set:
    unknown = sorted(requested - available)
    if unknown:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{field} names unknown entries {unknown}; available: {sorted(available)}")
    return requested


def _answer_spec(spec, manager: ModelManager, servable, signature: str | None = None) -> None:
    spec.name = manager.model_name
    spec.version.value = servable.version
    if signature:
        spec.signature_name = signature


def value_rules(servable) -> dict:
    """{feature: values.ColumnRule} of the servable's model inputs, from its feature config ({} when the version has
    no mdl metadata, e.g. a foreign SavedModel). Computed once per loaded version."""
    rules = getattr(servable, "_value_rules", None)
    if rules is None:
        raw = (servable.metadata or {}).get("feature_config")
        rules = values.serving_rules(cfgmod.from_dict(raw, f"version {servable.version} metadata")) if raw else {}
        servable._value_rules = rules
    return rules


def _check_values(servable, signature: str, inputs: dict) -> dict:
    """The value contract on the request (`request_checks`); a bad value -> INVALID_ARGUMENT naming it."""
    rules = value_rules(servable)
    if not rules:
        return rules
    try:
        if set(inputs) == {EXAMPLES_INPUT}:
            request_checks.check_examples(inputs[EXAMPLES_INPUT].reshape(-1), rules, EXAMPLES_INPUT)
        else:
            request_checks.check_raw_inputs(inputs, rules)
    except DataError as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"signature '{signature}' rejected the input: {e}")
    return rules


def predict(manager: ModelManager, request, max_batch: int = DEFAULT_MAX_BATCH):
    """PredictRequest -> PredictResponse (raises RequestError)."""
    servable = _resolve(manager, request.model_spec)
    signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
    inputs = _inputs(servable, signature, request, max_batch)
    rules = _check_values(servable, signature, inputs)
    try:
        outputs = servable.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, ValueError, TypeError) as e:
        names = list(rules) or list(inputs)
        message = request_checks.describe_tf_error(getattr(e, "message", str(e)), names)
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"signature '{signature}' rejected the input: {message}")
    wanted = _known(set(request.output_filter) or set(outputs), set(outputs), "output_filter")
    response = predict_pb2.PredictResponse()
    _answer_spec(response.model_spec, manager, servable, signature)
    for name in sorted(wanted):
        response.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(outputs[name])))
    return response


def model_metadata(manager: ModelManager, request):
    servable = _resolve(manager, request.model_spec)
    fields = _known(set(request.metadata_field) or {SIGNATURE_DEF_FIELD}, {SIGNATURE_DEF_FIELD, MDL_METADATA_FIELD},
                    "metadata_field")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _answer_spec(response.model_spec, manager, servable)
    if SIGNATURE_DEF_FIELD in fields:
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in servable.signature_defs.items():
            sig_map.signature_def[name].CopyFrom(sig)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
    if MDL_METADATA_FIELD in fields:
        response.metadata[MDL_METADATA_FIELD].Pack(wrappers_pb2.StringValue(value=json.dumps(servable.metadata)))
    return response


def model_status(manager: ModelManager, request):
    servable = _resolve(manager, request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    status = response.model_version_status.add()
    status.version = servable.version
    status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return response


def _answer(context, fn, *args):
    """Run a handler; a RequestError becomes its gRPC status, anything else INTERNAL. The server keeps serving."""
    try:
        return fn(*args)
    except RequestError as e:
        context.abort(e.code, str(e))
    except Exception as e:  # noqa: BLE001
        log.exception("internal error")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, max_batch: int):
        self.manager, self.max_batch = manager, max_batch

    def Predict(self, request, context):  # noqa: N802  (gRPC method names)
        return _answer(context, predict, self.manager, request, self.max_batch)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _answer(context, model_metadata, self.manager, request)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        return _answer(context, model_status, self.manager, request)


def make_server(manager: ModelManager, host: str = "127.0.0.1", port: int = 8500, max_workers: int = 16,
                max_batch: int = DEFAULT_MAX_BATCH, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
    """(grpc.Server, bound port); port 0 picks a free one. The server is not started."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(manager, max_batch),
                                                                        server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port} (in use?)")
    return server, bound


def serve_forever(base_path, model_name: str, host: str = "127.0.0.1", port: int = 8500,
                  poll_seconds: float = 2.0, grace_seconds: float = 5.0, ready=None, **server_kwargs) -> None:
    """Serve until SIGTERM/SIGINT, then stop taking requests and let in-flight ones finish (`grace_seconds`).

    Runs in the main thread (Python installs signal handlers only there; RuntimeError elsewhere, before anything
    starts). `ready(port)`, if given, is called once the server answers and the handlers are in place (`port` is the
    bound one: `port=0` picks a free port); if it raises, the server stops and the handlers are restored."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve_forever runs in the main thread: it stops on SIGTERM/SIGINT, whose handlers Python "
                           "installs there only")
    manager = ModelManager(base_path, model_name, poll_seconds).start()
    if manager.current is None:
        log.warning("model %s: no loadable version under %s yet; waiting for one", model_name, base_path)
    try:
        server, bound = make_server(manager, host, port, **server_kwargs)
    except BaseException:
        manager.stop()
        raise
    server.start()
    print(f"mdl-tf serve: model '{model_name}' version {manager.current.version if manager.current else '-'} on "
          f"{host}:{bound} (development server; production is TF Serving)", flush=True)
    received = []  # the signal that asked to stop; the handler only appends (no lock it could deadlock on)

    def _stop(signum, _frame):
        received.append(signum)

    previous = {}
    try:
        for s in (signal.SIGTERM, signal.SIGINT):
            previous[s] = signal.signal(s, _stop)
        if ready is not None:
            ready(bound)
        # Poll, never block: Linux hands a process-directed signal to another thread (gRPC's, TensorFlow's) when the
        # main thread cannot take it at that moment, and Python runs the handler only when the main thread next runs
        # bytecode. A main thread blocked in Event.wait() without a timeout then never ran it (the server ignored
        # SIGTERM for 60 s in two loaded CI runs).
        while not received:
            time.sleep(SIGNAL_POLL_SECONDS)
        log.info("signal %d: shutting down", received[0])
    finally:
        # In-flight requests get `grace_seconds`; the wait is bounded whatever gRPC does.
        server.stop(grace_seconds).wait(grace_seconds + 5)
        manager.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        print("mdl-tf serve: stopped", flush=True)
