"""Finding a pipeline's outputs through ML Metadata: the latest Evaluator result, blessing, pushed model.

Used by `mdl-tf pipeline run` (its summary), the tests and the notebooks.
"""
from __future__ import annotations

from pathlib import Path

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

METADATA_FILE = "metadata.sqlite"


def metadata_path(pipeline_root) -> Path:
    return Path(pipeline_root) / METADATA_FILE


def connection_config(pipeline_root) -> metadata_store_pb2.ConnectionConfig:
    cfg = metadata_store_pb2.ConnectionConfig()
    cfg.sqlite.filename_uri = str(metadata_path(pipeline_root))
    cfg.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return cfg


def store(pipeline_root) -> mlmd.MetadataStore:
    path = metadata_path(pipeline_root)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no ML Metadata store; run `mdl-tf pipeline run --root {pipeline_root}` "
                                f"first")
    ro = metadata_store_pb2.ConnectionConfig()
    ro.sqlite.filename_uri = str(path)
    ro.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(ro)


def _custom(artifact, key):
    if key not in artifact.custom_properties:
        return None
    v = artifact.custom_properties[key]
    return v.int_value if v.HasField("int_value") else v.string_value or v.double_value


def artifacts(pipeline_root, type_name: str) -> list:
    """Every LIVE artifact of a type, oldest first, as {id, uri, properties}."""
    s = store(pipeline_root)
    out = []
    for a in sorted(s.get_artifacts_by_type(type_name), key=lambda a: a.id):
        if a.state != metadata_store_pb2.Artifact.LIVE:
            continue
        props = {k: _custom(a, k) for k in a.custom_properties}
        out.append({"id": a.id, "uri": a.uri, "properties": props})
    return out


def latest(pipeline_root, type_name: str) -> dict | None:
    found = artifacts(pipeline_root, type_name)
    return found[-1] if found else None


def latest_evaluation(pipeline_root) -> dict | None:
    """The newest Evaluator output ({id, uri, properties}); load it with tfma.load_eval_result(uri)."""
    return latest(pipeline_root, "ModelEvaluation")


def latest_blessing(pipeline_root) -> dict | None:
    return latest(pipeline_root, "ModelBlessing")


def pushed_versions(serving_root, model_name: str) -> list:
    """Complete version directories (with saved_model.pb) under <serving_root>/<model_name>, oldest first."""
    base = Path(serving_root) / model_name
    if not base.is_dir():
        return []
    versions = [p for p in base.iterdir() if p.name.isascii() and p.name.isdigit() and (p / "saved_model.pb").exists()]
    return sorted(versions, key=lambda p: int(p.name))


def evaluation_metrics(eval_uri, model: str = "candidate") -> dict:
    """{slice: {output: {metric: value}}} of one Evaluator output; slice is "Overall" or "column:value".

    model: "candidate" (the newly trained model; also a run without baseline), "baseline", or "diff" (candidate -
    baseline, present when a blessed baseline existed). Reads the metrics protos directly, so it works with or without
    a baseline, for any model the pipeline trained."""
    import tensorflow_model_analysis as tfma

    out = {}
    for record in tfma.load_metrics(str(eval_uri)):
        name = slice_name(record.slice_key)
        for kv in record.metric_keys_and_values:
            key = kv.key
            is_baseline = key.model_name == tfma.BASELINE_KEY
            if model == "diff":
                wanted = key.is_diff
            elif model == "baseline":
                wanted = is_baseline and not key.is_diff
            else:
                wanted = not is_baseline and not key.is_diff
            if not wanted or not kv.value.HasField("double_value"):
                continue
            out.setdefault(name, {}).setdefault(key.output_name, {})[key.name] = kv.value.double_value.value
    return out


def slice_name(slice_key) -> str:
    """"Overall", or "column:value" (" & "-joined) of a TFMA SliceKey; text values decoded, numbers as they are."""
    parts = []
    for c in slice_key.single_slice_keys:
        kind = c.WhichOneof("kind")
        value = getattr(c, kind) if kind else ""
        parts.append(f"{c.column}:{value.decode('utf-8', errors='replace') if isinstance(value, bytes) else value}")
    return " & ".join(parts) or "Overall"


def validation_failures(eval_uri) -> list:
    """The Evaluator's failed thresholds (why a model was not blessed): [{"slice", "output", "metric", "diff",
    "value"}], "diff" True for a change against the baseline (the blessed model), False for an absolute bound; plus
    {"missing": True} when the validation had thresholds or slices it could not evaluate."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(str(eval_uri))
    out = [{"slice": slice_name(per_slice.slice_key), "output": f.metric_key.output_name,
            "metric": f.metric_key.name, "diff": f.metric_key.is_diff, "value": f.metric_value.double_value.value}
           for per_slice in result.metric_validations_per_slice for f in per_slice.failures]
    missing = result.missing_thresholds or len(result.missing_slices) or len(result.missing_cross_slices)
    return out + ([{"missing": True}] if missing else [])


def component_seconds(pipeline_root) -> dict:
    """Wall seconds of each component's newest execution, from ML Metadata's start and last-update times, in the
    order the components ran: {component: seconds}."""
    s = store(pipeline_root)
    types = {t.id: t.name for t in s.get_execution_types()}
    newest = {}
    for e in sorted(s.get_executions(), key=lambda e: e.create_time_since_epoch):
        name = types.get(e.type_id, str(e.type_id)).rsplit(".", 1)[-1]
        newest[name] = (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0
    return newest
