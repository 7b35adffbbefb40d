"""AnomaliesGate: reads ExampleValidator's anomalies, reports them, and (when asked) stops the run before training.

ExampleValidator only records anomalies; nothing downstream looks at them. The Transform and the Trainer are made to
depend on this gate, so with `fail_on_anomalies=1` an anomalous input never reaches training or a push.
"""
# No `from __future__ import annotations` here: TFX parses the component signature's real type hints.

import logging
from pathlib import Path

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx

log = logging.getLogger(__name__)
ANOMALIES_FILE = "SchemaDiff.pb"


class AnomaliesFound(RuntimeError):
    """ExampleValidator found anomalies and the run was asked to fail on them."""


def read_anomalies(uri) -> list:
    """[(split, column or '<dataset>', short description, description)] from an ExampleAnomalies artifact dir."""
    found = []
    for path in sorted(Path(uri).glob(f"Split-*/{ANOMALIES_FILE}")):
        split = path.parent.name[len("Split-"):]
        proto = anomalies_pb2.Anomalies()
        proto.ParseFromString(path.read_bytes())
        for column, info in sorted(proto.anomaly_info.items()):
            found.append((split, column, info.short_description, info.description))
        if proto.HasField("dataset_anomaly_info"):
            info = proto.dataset_anomaly_info
            found.append((split, "<dataset>", info.short_description, info.description))
    return found


def describe(found: list) -> str:
    return "\n".join(f"  split '{s}', column '{c}': {short} ({desc})" for s, c, short, desc in found)


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    fail_on_anomalies: tfx.dsl.components.Parameter[int] = 0,
) -> tfx.dsl.components.OutputDict(anomaly_count=int, report=str):
    found = read_anomalies(anomalies.uri)
    report = describe(found)
    if found:
        message = (f"ExampleValidator found {len(found)} anomal{'y' if len(found) == 1 else 'ies'} against the "
                   f"schema:\n{report}\nFix the data or the schema (schemas/<dataset>/), or run without "
                   f"--fail-on-anomalies to train anyway.")
        if fail_on_anomalies:
            raise AnomaliesFound(message)
        log.warning(message)
    return {"anomaly_count": len(found), "report": report}
