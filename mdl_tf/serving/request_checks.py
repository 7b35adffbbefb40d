"""The development server's checks of Predict inputs, by the value contract of `mdl_tf.values`.

A request is checked against the served model's feature config (from its `mdl_metadata.json`) before it reaches the
SavedModel, so a bad value is refused naming the example (or batch row) and the feature, like the client refuses it.
Errors TensorFlow still raises inside the graph are rephrased by `describe_tf_error` to name the feature.
"""
from __future__ import annotations

import re

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2

from mdl_tf import values
from mdl_tf.errors import DataError

_LIST_OF = {"numeric": "float_list", "int": "int64_list", "string": "bytes_list"}


def _list_kind(rule: values.ColumnRule) -> str:
    return _LIST_OF["numeric" if rule.kind == "numeric" else "int" if rule.dtype == "int" else "string"]


def check_examples(serialized, rules: dict, input_name: str = "examples") -> None:
    """Every serialized tf.Example of a request: parsable, each model feature absent (missing) or a list of the right
    type with exactly one value that fits its rule, required features present. Raises DataError naming
    `input_name[i]` and the feature; features the model does not read are ignored (as TF Serving does)."""
    for i, blob in enumerate(serialized):
        where = f"{input_name}[{i}]"
        if not isinstance(blob, bytes):
            raise DataError(f"{where}: is not a serialized tf.Example (bytes)")
        example = example_pb2.Example()
        try:
            example.ParseFromString(blob)
        except DecodeError:
            raise DataError(f"{where}: is not a serialized tf.Example") from None
        feats = example.features.feature
        for name, rule in rules.items():
            if name not in feats:
                value = None
            else:
                feature = feats[name]
                kind = feature.WhichOneof("kind")
                want = _list_kind(rule)
                if kind is not None and kind != want:
                    raise DataError(f"{where}, feature '{name}': holds a {kind}, the model expects a {want} with one "
                                    f"value; {rule.expects}")
                items = list(getattr(feature, want).value) if kind else []
                if kind and len(items) != 1:
                    raise DataError(f"{where}, feature '{name}': holds {len(items)} values in its {kind}, the model "
                                    f"takes one per example (leave the feature out when the value is missing); "
                                    f"{rule.expects}")
                value = items[0] if items else None
            try:
                values.check_value(rule, value)
            except values.InvalidValue as e:
                raise DataError(f"{where}, feature '{name}': value {e.value!r} {e.reason}") from None


def check_raw_inputs(inputs: dict, rules: dict) -> None:
    """The `serving_raw` signature's per-feature [B] tensors: every element must fit its feature's rule."""
    for name, array in inputs.items():
        rule = rules.get(name)
        if rule is None:
            continue
        for i, value in enumerate(np.asarray(array).reshape(-1)):
            try:
                values.check_value(rule, value.item() if isinstance(value, np.generic) else value)
            except values.InvalidValue as e:
                raise DataError(f"input '{name}'[{i}]: value {e.value!r} {e.reason}") from None


_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]|\s*\[\[\{\{node [^\]]*\]\]|"
                    r"Graph execution error:|"
                    r"Detected at node \S+ defined at \(most recent call last\):|<stack traces unavailable>|"
                    r"Name: <unknown>,")
_TF_FEATURE = re.compile(r"\b(?:Key|Feature):\s*([^\s,]+?)[,.]?(?:\s|$)")
_INDEX = re.compile(r"Index:\s*(\d+)")


def describe_tf_error(message: str, names) -> str:
    """A TensorFlow error raised inside a serving graph, as one line that names the feature (and example) it is
    about: the one TensorFlow's parser names (`Key: x` / `Feature: x`), else one of `names` the message mentions;
    graph-node noise removed."""
    text = " ".join(_NOISE.sub(" ", message).split())
    reported = _TF_FEATURE.findall(text)
    known = reported or [n for n in sorted(names, key=len, reverse=True) if re.search(rf"\b{re.escape(n)}\b", text)]
    if not known:
        return text[:500]
    index = _INDEX.search(text)
    at = f" of example {index.group(1)}" if index else ""
    return f"feature '{known[0]}'{at}: {text[:500]}"
