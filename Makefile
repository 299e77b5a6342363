# gpuops: every target does its own set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint ruff typecheck bench services install clean deploy-schema

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

services:
	bash scripts/ensure-services.sh

ruff: $(STAMP)
	$(VENV)/bin/ruff check gpuops entrypoints evaluation domain agent detectors runbooks connectors simulator migrations tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

lint: ruff typecheck

# Two workers, one test file each at a time (a file's fixtures and servers stay in one process): most tests wait
# on servers, browsers and subprocesses, so the suite takes about half as long on two cores.
test: $(STAMP) services lint
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

demo: $(STAMP)
	$(VENV)/bin/gpuops demo

# The Compose Specification's JSON schema (shipped in the docker-compose 1.29.2 wheel), for the deploy tests.
deploy-schema: $(STAMP)
	$(PY) -c "from tests.unit.test_deploy_files import compose_schema; compose_schema()"

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache gpuops.db
