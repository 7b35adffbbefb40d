"""TF Serving warmup requests: `assets.extra/tf_serving_warmup_requests`, a TFRecord of PredictionLogs.

TF Serving replays them (with `--enable_model_warmup`) when it loads a version, so the first real request does not pay
for lazy initialisation (lookup tables, tf.function tracing). At most 1000 records are allowed.
"""
from __future__ import annotations

import tensorflow as tf

from mdl_tf.config import FeatureConfig

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def write_warmup_requests(extra_dir, serialized_examples: list, model_name: str, batch_size: int = 4,
                          signature_name: str = "serving_default") -> str:
    """One Predict request per `batch_size` examples on the signature's `examples` input."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    if not serialized_examples:
        raise ValueError("warmup needs at least one serialized tf.Example")
    batches = [serialized_examples[i:i + batch_size] for i in range(0, len(serialized_examples), batch_size)]
    path = f"{str(extra_dir).rstrip('/')}/{WARMUP_FILE}"  # a string join: extra_dir may be a URI (gs://...)
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches[:MAX_WARMUP_RECORDS]:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(path) -> list:
    """The PredictRequests of a warmup file (for checks and tests)."""
    from tensorflow_serving.apis import prediction_log_pb2

    out = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        out.append(log.predict_log.request)
    return out


def synthetic_rows(cfg: FeatureConfig, vocabularies: dict, count: int) -> list:
    """`count` plausible raw rows built from the fitted vocabularies (row i: the i-th most frequent tokens, scenario
    values in turn). Used where no raw example is at hand, e.g. the TFX run_fn, which only sees transformed data.
    A hashed feature (no vocabulary) gets made-up ids, which spread over its buckets like real ones."""
    rows = []
    for i in range(count):
        row = {}
        for f in cfg.features:
            owner = cfg.vocab_owner(f)
            if cfg.feature(owner).is_hashed:
                vocab = [str(k) if f.dtype == "int" else f"{owner}{k}" for k in range(64)]
            else:
                vocab = vocabularies.get(owner) or ["0" if f.dtype == "int" else "unknown"]
            token = vocab[i % len(vocab)]
            if f.kind == "numeric":
                row[f.name] = float(i % 3)
            elif f.kind == "categorical":
                row[f.name] = token
            else:
                row[f.name] = f.separator.join(vocab[(i + j) % len(vocab)] for j in range(min(f.max_len, 3)))
        row[cfg.scenario.column] = cfg.scenario.values[i % len(cfg.scenario.values)]
        if cfg.scenario.membership_column:
            row[cfg.scenario.membership_column] = row[cfg.scenario.column]
        rows.append(row)
    return rows
