"""Loads the newest version of a model from a TF Serving model base path and swaps in newer ones as they appear.

`<base_path>/<version>/saved_model.pb` is TF Serving's layout (what the Pusher writes). A version directory without
saved_model.pb is still being written and is ignored; one that fails to load is logged once and skipped (never
served) until its contents change. Swapping is a reference assignment: a request that already holds a version keeps
using it, so a new version never drops an in-flight request.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)
SAVED_MODEL = "saved_model.pb"
METADATA = Path("assets.extra") / "mdl_metadata.json"


@dataclasses.dataclass
class ServableVersion:
    """One loaded version: its signatures (concrete functions), their SignatureDefs and the mdl metadata."""

    version: int
    path: Path
    loaded: object
    signature_defs: dict
    metadata: dict

    @property
    def signatures(self):
        return self.loaded.signatures

    def input_specs(self, signature: str) -> dict:
        return self.loaded.signatures[signature].structured_input_signature[1]


def _signature_defs(path: Path) -> dict:
    from tensorflow.python.saved_model import loader_impl

    saved = loader_impl.parse_saved_model(str(path))
    return dict(saved.meta_graphs[0].signature_def)


def load_version(path: Path) -> ServableVersion:
    meta_path = path / METADATA
    metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return ServableVersion(version=int(path.name), path=path, loaded=tf.saved_model.load(str(path)),
                           signature_defs=_signature_defs(path), metadata=metadata)


def _fingerprint(path: Path) -> tuple:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


class ModelManager:
    """Serves the newest loadable version under `base_path` (TF Serving's default `latest` version policy)."""

    def __init__(self, base_path, model_name: str, poll_seconds: float = 2.0):
        self.base_path = Path(base_path)
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self._current: ServableVersion | None = None
        self._failed: dict = {}  # version dir -> fingerprint of the contents that failed to load
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ServableVersion | None:
        return self._current

    def candidates(self) -> list:
        """Complete version directories, newest first."""
        if not self.base_path.is_dir():
            return []
        dirs = [p for p in self.base_path.iterdir()
                if p.is_dir() and p.name.isascii() and p.name.isdigit() and (p / SAVED_MODEL).exists()]
        return sorted(dirs, key=lambda p: int(p.name), reverse=True)

    def refresh(self) -> ServableVersion | None:
        """Load the newest complete version if it is newer than the one served; returns what is served now."""
        with self._lock:
            served = self._current.version if self._current else -1
            for path in self.candidates():
                if int(path.name) <= served:
                    break
                fingerprint = _fingerprint(path)
                if self._failed.get(path) == fingerprint:
                    continue
                try:
                    loaded = load_version(path)
                except Exception as e:  # noqa: BLE001  (any corrupt directory must be skipped, not crash the server)
                    self._failed[path] = fingerprint
                    log.error("model %s: skipping version %s at %s: it does not load (%s: %s)", self.model_name,
                              path.name, path, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
                    continue
                previous = self._current
                self._current = loaded
                log.info("model %s: serving version %d (was %s)", self.model_name, loaded.version,
                         previous.version if previous else "none")
                break
            return self._current

    def start(self) -> "ModelManager":
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name=f"{self.model_name}-version-poll", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001  (keep polling; the error is logged)
                log.exception("model %s: version poll failed", self.model_name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
