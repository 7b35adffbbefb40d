# Every target sets itself up: `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export TF_USE_LEGACY_KERAS := 1
export PYTHONUNBUFFERED := 1
RUN_OUT ?= out/demo

.PHONY: setup run test test-fast fuzz clean

setup:  ## create .venv (Python 3.10) and install pinned requirements; no-op when up to date
	@bash scripts/bootstrap.sh

run: setup  ## the main job on the embedded synthetic data (see README)
	$(VENV)/bin/mdl-tf run --out $(RUN_OUT)

# The suite runs on two workers (pytest-xdist; tests/conftest.py groups tests that share fixtures), then the
# `serial` tests (multi-process clusters) alone; both parts always run, and the target fails if either does.
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
test: setup  ## the whole test suite
	@status=0; \
	$(PYTEST) --durations=15 -n 2 --dist loadgroup -m "not serial" || status=1; \
	$(PYTEST) --durations=5 -m serial tests/test_distributed.py || status=1; \
	exit $$status

test-fast: setup  ## skip tests marked slow
	$(PY) -m pytest -q -m "not slow"

fuzz: setup  ## the property-based tests of the value contract with a large, random budget (CI runs a small fixed one)
	MDL_FUZZ=1 MDL_FUZZ_SCALE=$${MDL_FUZZ_SCALE:-25} $(PY) -m pytest -q -p no:cacheprovider tests/test_values.py \
		tests/test_serving_values.py -k "fuzz or every_value or inference or loader_accepts"

clean:
	rm -rf out .pytest_cache
