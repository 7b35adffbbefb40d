"""What an `mdl-tf` command shows: its own progress and result on stdout, library logging in a log file.

`session(log_file, verbose)` (used by `mdl_tf.cli.main` around every command):
* every Python log record (absl/TFX INFO included), every Python warning and, when the process's standard error is
  the real one, everything native code writes to file descriptor 2 (TensorFlow's C++ `E ... Unable to register
  cuFFT factory` lines, Beam worker processes) go to `log_file`, appended under a header naming the command;
* the terminal gets: the command's own prints (stdout), and on stderr one attributed line per genuine warning or
  error (`mdl-tf: warning: tfx.components...: message`); known benign library messages (`NOISE`) go to the file only;
* with `verbose`, everything is shown live on stderr as well (nothing is redirected).

The log file's path is printed once, on stderr (stdout may carry a result that is piped on), when the command
ends; a user error prints its one line only.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

# Library messages that look like failures but are not: they go to the log file only. Each pattern is searched in the
# record's message (for Python warnings: "file:line: Category: text").
NOISE = tuple(re.compile(p) for p in (
    r"Unable to register cu(FFT|DNN|BLAS) factory",           # TF's C++ at import (CPU-only wheels, harmless)
    r"FutureWarning: .*google-cloud-storage",                 # google-cloud-aiplatform on the pinned storage client
    r"google/api_core/.*FutureWarning",                       # google-api-core: Python 3.10 support ends (TFX pins 3.10)
    r"non-supported Python version",
    r"Tables initialized inside a tf\.function",              # TF Transform's vocabulary tables (by design)
    r"(Artifact|Context)Query\.property_predicate is not supported",  # TFX input resolution (local runner)
    r"does not have payload_format custom property",          # TFX: CsvExampleGen's examples are tf.Examples
    r"could not transform .* and will run it as-is",          # AutoGraph on library functions (runs them eagerly)
    r"AutoGraph could not transform",
    r"python-snappy",                                         # Beam: a faster CRC is optional
    r"Make sure that locally built Python SDK docker image",  # Beam: only about portable runners
    r"is deprecated and will be removed",                     # TF deprecation notices from inside TFX/TFT/TFMA
    r"non-serializable objects\. Please implement a `get_config",  # tf.keras on subclassed models (we save weights)
    r"SavedModel saved prior to TF 2\.5 detected",            # TFMA loading the serving SavedModel
    r"tensorflow_model_analysis/.*RuntimeWarning: (invalid value|divide by zero)",  # TFMA: empty calibration bins
    # TFX's Pusher when it has no model_blessing input; ours runs only inside Cond(blessed == 1), after the Evaluator
    # (tfx_pipeline/pipeline/pipeline.py), so the push *is* validated and the advice is wrong for it.
    r"Pusher is going to push the model without validation",
    # absl, for a column named like a number (Ali-CCP's `101`): the traced function's argument is renamed, the
    # signature's input keeps its name.
    r"is not a valid tf\.function parameter name\. Sanitizing",
))
OWN_LOGGERS = ("mdl_tf", "tfx_pipeline")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def is_noise(record: logging.LogRecord) -> bool:
    """Whether a record is one of the known benign library messages (`NOISE`)."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001  (a library's bad format arguments: not ours to judge)
        return False
    return any(p.search(message) for p in NOISE)


class _ConsoleFilter(logging.Filter):
    """Genuine warnings and errors (any logger), never the known noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not is_noise(record)


class OneLineFormatter(logging.Formatter):
    """`mdl-tf: warning: <logger>: <message on one line>` (a Python warning: `<Category> (<file>:<line>): text`)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "py.warnings":  # "path:line: Category: text\n  source line"
            m = re.match(r"(?s)(.*?):(\d+): (\w+): (.*?)(\n  .*)?$", message)
            source = f"{m.group(3)} ({m.group(1)}:{m.group(2)})" if m else "warning"
            message = m.group(4) if m else message
        else:
            source = record.name
        if record.exc_info and record.levelno >= logging.ERROR:
            message += f" ({record.exc_info[0].__name__}: {record.exc_info[1]})"
        return f"mdl-tf: {record.levelname.lower()}: {source}: {' '.join(message.split())}"


def default_log_dir() -> Path:
    """Where commands without an output folder (serve, predict, schema export ...) write their log."""
    return Path(os.environ.get("MDL_TF_CACHE", Path.home() / ".cache" / "mdl_tf")) / "logs"


def print_log_path(log_file, verbose: bool) -> None:
    """`mdl-tf: log: <path>` on stderr (stdout may be a result piped on, e.g. mdl-tf predict without --output)."""
    print(f"mdl-tf: log: {log_file}{'' if verbose else ' (-v shows it live)'}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def session(log_file, verbose: bool, title: str = "mdl-tf", announce: bool = True):
    """Route logging for one command (module docstring); restores the previous set-up on exit.

    log_file: appended to (parent folders are created); announce: print `mdl-tf: log: <path>` on stderr when the
    block ends without an exception (at the end, so that a user error stays one line: see mdl_tf.cli.main).
    Yields the log file's Path."""
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_file, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    stream.write(f"\n==== {title} ({time.strftime('%Y-%m-%d %H:%M:%S')}, pid {os.getpid()}) ====\n")

    redirect = not verbose and sys.stderr is sys.__stderr__ and _is_fd(sys.stderr, 2)
    saved_fd, saved_stderr = None, sys.stderr
    if redirect:  # native code (TF C++, Beam workers) writes to fd 2: point it at the log, keep Python's stderr
        sys.stderr.flush()
        saved_fd = os.dup(2)
        os.dup2(stream.fileno(), 2)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved_fd), "wb", buffering=0), encoding="utf-8",
                                      errors="backslashreplace", line_buffering=True, write_through=True)

    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    file_handler = logging.StreamHandler(stream)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    console = logging.StreamHandler(sys.stderr)
    if verbose:
        console.setFormatter(logging.Formatter(LOG_FORMAT))
    else:
        console.addFilter(_ConsoleFilter())
        console.setFormatter(OneLineFormatter())
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    libraries = _quiet_library_loggers()
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each distinct warning once, into the log (and the console filter)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
            yield log_file
        if announce:
            print_log_path(log_file, verbose)
    finally:
        logging.captureWarnings(False)
        for h in (file_handler, console):
            root.removeHandler(h)
        root.setLevel(saved_root[0])
        for h in saved_root[1]:
            root.addHandler(h)
        _restore_library_loggers(libraries)
        if redirect:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            sys.stderr = saved_stderr
        stream.close()


def _is_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def _quiet_library_loggers() -> dict:
    """Send the absl and TensorFlow loggers through the root's handlers only (they may carry their own stderr
    handler); absl at INFO, so TFX's component logs reach the file. Returns what to restore."""
    saved = {}
    for name in ("absl", "tensorflow"):
        logger = logging.getLogger(name)
        saved[name] = (logger.level, list(logger.handlers), logger.propagate)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = True
    try:
        from absl import logging as absl_logging

        saved["absl_verbosity"] = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.INFO)
    except ImportError:  # absl comes with TensorFlow; without it there is nothing to set
        pass
    return saved


def _restore_library_loggers(saved: dict) -> None:
    if "absl_verbosity" in saved:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(saved.pop("absl_verbosity"))
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        for h in list(logger.handlers):  # e.g. the pipeline's progress printer
            logger.removeHandler(h)
        for h in handlers:
            logger.addHandler(h)
