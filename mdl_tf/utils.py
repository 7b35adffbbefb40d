"""Small helpers shared across modules: atomic writes, JSON dumping."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_uri(path) -> bool:
    """Whether `path` names an object-store or remote file system location (gs://, s3://, hdfs://, ram://), which
    pathlib would mangle ("gs://b" -> "gs:/b"): read and write those with tf.io.gfile and `join`."""
    return "://" in str(path)


def join(*parts) -> str:
    """Path join that keeps URIs intact (pathlib and os.path collapse the "//" of "gs://")."""
    return "/".join(str(p).rstrip("/") for p in parts)


def write_text(path, text: str) -> None:
    """Write `text` to a local path atomically (`atomic_write_text`) or to a URI whole through tf.io.gfile, creating
    the parent folder (object stores have no rename; an object is written whole or not at all)."""
    if is_uri(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(str(path).rsplit("/", 1)[0])
        with tf.io.gfile.GFile(str(path), "w") as f:
            f.write(text)
    else:
        atomic_write_text(Path(path), text)


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item"):  # numpy scalar
        return _json_safe(x.item())
    return x


def write_json(path, obj) -> None:
    """JSON write, atomic on a local disk; a URI (gs://..., a Kubeflow root) is written whole through tf.io.gfile
    (object stores have no rename, and pathlib would mangle the URI). NaN/inf become null (JSON has no NaN)."""
    write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def atomic_save_npz(path: Path, **arrays) -> None:
    """np.savez_compressed to `path` through a temporary file and a rename (never a partial file)."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
