#!/usr/bin/env bash
# Creates .venv/ with Python 3.10 and installs the pinned requirements plus this project (editable).
# Idempotent: does nothing when .venv already holds an install of the same requirements/constraints/pyproject.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_USE_LEGACY_KERAS=1

stamp=.venv/.mdl-tf-install-hash
want=$(cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

is_py310() { [[ -n "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; }
find_python310() {
  local c
  for c in "${PYTHON310:-}" python3.10 "$(PYENV_VERSION=3.10.13 pyenv prefix 2>/dev/null)/bin/python3.10" \
           "$(pyenv prefix 3.10.13 2>/dev/null)/bin/python3.10" /usr/bin/python3.10; do
    if is_py310 "$c"; then echo "$c"; return 0; fi
  done
  return 1
}

if [[ -x .venv/bin/python ]] && ! is_py310 .venv/bin/python; then
  echo "bootstrap: .venv is not Python 3.10; recreating it" >&2
  rm -rf .venv
fi
if [[ ! -x .venv/bin/python ]]; then
  py=$(find_python310) || { echo "bootstrap: Python 3.10 not found. TFX 1.16 needs 3.10: install it (pyenv install 3.10.13) or set PYTHON310=/path/to/python3.10" >&2; exit 1; }
  echo "bootstrap: creating .venv with $py"
  "$py" -m venv .venv
fi
echo "bootstrap: installing pinned requirements into .venv (first time takes a few minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip==24.2" "setuptools==75.1.0" wheel
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "$want" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "bootstrap: .venv ready"
