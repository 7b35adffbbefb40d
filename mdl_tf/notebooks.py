"""Run the shipped notebooks headless (nbclient) in a kernel that has `TF_USE_LEGACY_KERAS=1`.

`mdl-tf notebooks run --out DIR [--pipeline-root R] [--model-dir M] [--data D]` executes every notebook under
notebooks/ and writes the executed copies (outputs and images included) to DIR; a failing cell fails the command.
Notebook parameters come from environment variables (MDL_PIPELINE_ROOT, MDL_MODEL_DIR, MDL_DATA_DIR), set in the
kernel's own kernel.json.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL_NAME = "mdl-tf"
PARAMETERS = {"pipeline_root": "MDL_PIPELINE_ROOT", "model_dir": "MDL_MODEL_DIR", "data_dir": "MDL_DATA_DIR"}


def write_kernel_spec(jupyter_dir, env: dict | None = None) -> Path:
    """A kernelspec for this interpreter under <jupyter_dir>/kernels/mdl-tf (Keras 2 set before anything imports)."""
    spec_dir = Path(jupyter_dir) / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "mdl-tf (Python 3.10, Keras 2)", "language": "python",
            "env": {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def execute(notebook, out_path, parameters: dict | None = None, timeout: int = 900) -> Path:
    """Execute one notebook in a fresh mdl-tf kernel; writes the executed notebook to `out_path`."""
    import nbformat
    from nbclient import NotebookClient

    env = {PARAMETERS[k]: str(Path(v).resolve()) for k, v in (parameters or {}).items() if v}
    nb = nbformat.read(str(notebook), as_version=4)
    with tempfile.TemporaryDirectory() as jupyter_dir:
        write_kernel_spec(jupyter_dir, env)
        previous = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = jupyter_dir + (os.pathsep + previous if previous else "")
        try:
            NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout,
                           resources={"metadata": {"path": str(Path(notebook).parent)}}).execute()
        finally:
            if previous is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = previous
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out_path))
    return out_path


def run_all(out_dir, names=None, **parameters) -> list:
    notebooks = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    if names:
        notebooks = [n for n in notebooks if n.stem in names]
    return [execute(nb, Path(out_dir) / nb.name, parameters) for nb in notebooks]
