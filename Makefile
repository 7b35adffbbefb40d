# Every target sets itself up: `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export TF_USE_LEGACY_KERAS := 1
export PYTHONUNBUFFERED := 1
RUN_OUT ?= out/demo

.PHONY: setup run test test-fast clean

setup:  ## create .venv (Python 3.10) and install pinned requirements; no-op when up to date
	@bash scripts/bootstrap.sh

run: setup  ## the main job on the embedded synthetic data (see README)
	$(VENV)/bin/mdl-tf run --out $(RUN_OUT)

test: setup  ## the whole test suite
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup  ## skip tests marked slow
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf out .pytest_cache
