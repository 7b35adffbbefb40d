"""A TF Serving gRPC client on the official `tensorflow_serving.apis` stubs.

    client = ServingClient("localhost:8500", "mdl")
    client.predict([{"user_id": "u1", "item_id": "i9", "scenario": "home", ...}])
    # -> [{"click_probability": 0.12, "purchase_probability": 0.01}]

Rows are raw feature dicts; the client turns them into tf.Examples with the model's feature config (given, or read
from the server's `mdl_metadata` metadata field, which `mdl-tf serve` offers and TF Serving does not). Every call has
a deadline; only UNAVAILABLE (server starting, restarting, or briefly unreachable) is retried, with backoff.
"""
from __future__ import annotations

import json
import time

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from mdl_tf import config as cfgmod
from mdl_tf.serving.examples import row_to_example
from mdl_tf.serving.server import (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SIGNATURE, EXAMPLES_INPUT, MDL_METADATA_FIELD,
                                   SIGNATURE_DEF_FIELD)


def _dtype_name(tensor_info) -> str:
    """dtype of a SignatureDef TensorInfo; sparse and ragged tensors carry theirs in composite_tensor."""
    if tensor_info.dtype:
        return tf.dtypes.as_dtype(tensor_info.dtype).name
    return "composite"


class ServingError(Exception):
    """A failed call: `code` is the gRPC status code, the message the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code


class ServingClient:
    def __init__(self, target: str, model_name: str, signature: str = DEFAULT_SIGNATURE, timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.2, feature_config: cfgmod.FeatureConfig | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.target, self.model_name, self.signature = target, model_name, signature
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._cfg = feature_config
        self.last_version = None  # the model version that answered the last Predict
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _call(self, method, request):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(self.backoff * (2 ** attempt))
                    continue
                raise ServingError(code, e.details() or "") from None
        raise AssertionError("unreachable")

    def _spec(self, target, version: int | None = None, signature: str | None = None):
        target.name = self.model_name
        if version is not None:
            target.version.value = version
        if signature is not None:
            target.signature_name = signature

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- API ----------------------------------------------------------------------------------------------------
    def predict_tensors(self, inputs: dict, signature: str | None = None, version: int | None = None) -> dict:
        """Any signature: {input: array} -> {output: array}."""
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, signature or self.signature)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._prediction.Predict, request)
        self.last_version = response.model_spec.version.value
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def predict_examples(self, serialized: list, version: int | None = None) -> dict:
        """Serialized tf.Examples -> {output: [B] array} through the client's signature (serving_default)."""
        return self.predict_tensors({EXAMPLES_INPUT: np.asarray(serialized, dtype=object)}, version=version)

    def feature_config(self) -> cfgmod.FeatureConfig:
        if self._cfg is None:
            mdl = self.metadata(include_mdl=True).get("mdl")
            if not mdl or "feature_config" not in mdl:
                raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                   "the server does not publish the model's feature config (TF Serving does not); "
                                   "pass feature_config= (CLI: --schema schemas/<name>) to build tf.Examples")
            self._cfg = cfgmod.from_dict(mdl["feature_config"], f"{self.target}/{self.model_name} metadata")
        return self._cfg

    def examples(self, rows: list, row_names: list | None = None) -> list:
        """Raw feature dicts -> serialized tf.Examples by the value contract (`mdl_tf.values`); a value that does not
        fit its feature raises DataError naming the row (`row_names[i]`, default "row i") and the feature, before
        anything is sent."""
        cfg = self.feature_config()
        names = row_names or [f"row {i}" for i in range(len(rows))]
        return [row_to_example(r, cfg, where=name) for r, name in zip(rows, names)]

    def predict(self, rows: list, version: int | None = None, row_names: list | None = None) -> list:
        """Raw feature dicts -> one {output: probability} dict per row (see `examples` for how rows are checked)."""
        if not rows:
            return []
        outputs = self.predict_examples(self.examples(rows, row_names), version=version)
        return [{k: float(v[i]) for k, v in sorted(outputs.items())} for i in range(len(rows))]

    def metadata(self, include_mdl: bool = False) -> dict:
        """{"version", "signatures": {name: {"inputs": {name: dtype}, "outputs": {name: dtype}}}, "mdl": dict|None}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec)
        request.metadata_field.append(SIGNATURE_DEF_FIELD)
        if include_mdl:
            request.metadata_field.append(MDL_METADATA_FIELD)
        try:
            response = self._call(self._prediction.GetModelMetadata, request)
        except ServingError as e:
            if not include_mdl or e.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            return self.metadata(include_mdl=False)  # TF Serving: signature_def only
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(sig_map)
        sigs = {name: {"inputs": {k: _dtype_name(v) for k, v in s.inputs.items()},
                       "outputs": {k: _dtype_name(v) for k, v in s.outputs.items()}}
                for name, s in sig_map.signature_def.items()}
        mdl = None
        if MDL_METADATA_FIELD in response.metadata:
            text = wrappers_pb2.StringValue()
            response.metadata[MDL_METADATA_FIELD].Unpack(text)
            mdl = json.loads(text.value)
        return {"version": response.model_spec.version.value, "signatures": sigs, "mdl": mdl}

    def status(self) -> list:
        """[{"version", "state"}] of the model's versions."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._models.GetModelStatus, request)
        return [{"version": s.version, "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state)}
                for s in response.model_version_status]
