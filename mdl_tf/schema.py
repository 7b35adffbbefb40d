"""Derive the TFMD schema (`schema.pbtxt`, what ImportSchemaGen and TFDV read) from the feature config.

The feature config is the source of truth; the schema is generated from it so the two can never disagree.
`mdl-tf schema export --schema DIR` rewrites DIR/schema.pbtxt from DIR/features.yaml (your own data);
`mdl-tf schema export [--dataset NAME]` rewrites the built-in ones under schemas/. `check_schema_file` stops a pipeline
whose schema.pbtxt was not regenerated after an edit of features.yaml.
"""
from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from mdl_tf.config import ConfigError, FeatureConfig
from mdl_tf.utils import atomic_write_text

SCHEMA_FILE = "schema.pbtxt"
_TYPES = {"string": schema_pb2.BYTES, "int": schema_pb2.INT, "float": schema_pb2.FLOAT}


def build_schema(cfg: FeatureConfig) -> schema_pb2.Schema:
    schema = schema_pb2.Schema()
    schema.default_environment.extend(["TRAINING", "SERVING"])

    def add(name: str, dtype: str, required: bool = False) -> schema_pb2.Feature:
        feat = schema.feature.add(name=name, type=_TYPES[dtype])
        if required:
            # A fixed [1] shape makes TF Transform see a dense tensor; every example must then carry the value.
            feat.shape.dim.add(size=1)
            feat.presence.min_fraction = 1.0
        else:
            # No shape: a CSV's empty cell is a missing value, TF Transform sees a SparseTensor with 0 or 1 values
            # per row and fills the gap (OOV id, training mean, empty list, unknown label).
            feat.presence.min_fraction = 0.0
            feat.value_count.min = 0
            feat.value_count.max = 1
        return feat

    for f in cfg.features:
        if f.name == cfg.scenario.column:
            continue
        # Multi-hot and sequence columns are one joined string each ("a|b|c"), possibly empty.
        add(f.name, f.dtype)
    sc = add(cfg.scenario.column, cfg.scenario.dtype, required=True)
    if cfg.scenario.dtype == "string":
        sc.domain = "scenario"
        schema.string_domain.add(name="scenario", value=list(cfg.scenario.values))
    if cfg.scenario.membership_column:
        add(cfg.scenario.membership_column, "string")
    for col, dtype in ((cfg.user_column, "string"), (cfg.query_column, "string"), (cfg.time_column, "int")):
        if col and col not in cfg.raw_feature_columns:
            add(col, dtype)
    for t in cfg.tasks:
        # Labels may be missing for a row (task undefined there); never served.
        lab = add(t.label, "int")
        lab.not_in_environment.append("SERVING")
        lab.int_domain.min = 0
        lab.int_domain.max = 1
    return schema


def schema_dir_of(path) -> Path:
    """The schema folder of `path`: the folder itself, or the folder of a features.yaml / schema.pbtxt given as a file
    (`--schema DIR/features.yaml` works wherever `--schema DIR` does)."""
    path = Path(path)
    return path.parent if path.is_file() else path


def check_schema_file(cfg: FeatureConfig, schema_file) -> None:
    """Raise ConfigError when `schema_file` disagrees with what `cfg` generates: a column missing or declared with
    another type (the pipeline would validate, parse and transform with the stale one: an anomaly warning, then a
    Transform failure minutes later). Everything a curator may change is left alone: extra columns, domains,
    comparators, presence and shapes (TFDV's `infer_schema` gives an always-filled column a shape)."""
    try:
        found = {f.name: f for f in text_format.Parse(Path(schema_file).read_text(), schema_pb2.Schema()).feature}
    except text_format.ParseError as e:
        raise ConfigError(f"{schema_file}: not a valid schema.pbtxt ({e}); regenerate it: mdl-tf schema export "
                          f"--schema {Path(schema_file).parent}") from None
    problems = []
    for want in build_schema(cfg).feature:
        have = found.get(want.name)
        if have is None:
            problems.append(f"'{want.name}' is missing")
        elif have.type != want.type:
            problems.append(f"'{want.name}' is {schema_pb2.FeatureType.Name(have.type)}, features.yaml makes it "
                            f"{schema_pb2.FeatureType.Name(want.type)}")
    if problems:
        raise ConfigError(f"{schema_file}: out of date with features.yaml: {'; '.join(problems)}; regenerate it: "
                          f"mdl-tf schema export --schema {Path(schema_file).parent} (it keeps the old file as "
                          f"{SCHEMA_FILE}.bak: copy back any hand or TFDV edits), or fix those columns by hand")


def schema_text(cfg: FeatureConfig) -> str:
    return text_format.MessageToString(build_schema(cfg))


def write_schema(cfg: FeatureConfig, schema_dir, keep_old: bool = False) -> Path:
    """Write `<schema_dir>/schema.pbtxt` generated from `cfg`; returns its path. keep_old: a file there that differs
    (a curated one) is first kept as schema.pbtxt.bak."""
    path = Path(schema_dir) / SCHEMA_FILE
    text = schema_text(cfg)
    if keep_old and path.exists() and path.read_text() != text:
        atomic_write_text(path.with_name(SCHEMA_FILE + ".bak"), path.read_text())
    atomic_write_text(path, text)
    return path
