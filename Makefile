# bigearthnet — see README.md. Quick start: `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
DEMO_DIR ?= demo
# Every Spark process started from make uses the venv's interpreter.
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: setup demo test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock scripts/check_java.sh conf/sedona-jars.lock scripts/fetch_sedona_jars.sh scripts/fetch_s3_server.sh conf/delta-jars.lock scripts/fetch_delta_jars.sh
	@scripts/check_java.sh
	@scripts/fetch_sedona_jars.sh
	@scripts/fetch_delta_jars.sh
	@scripts/fetch_s3_server.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: setup
	$(BIN)/bigearthnet run --workdir $(DEMO_DIR)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not cluster and not interop"

bench: setup
	$(BIN)/python bench/run.py

lint: setup
	$(BIN)/ruff check lib tests bench jobs dags

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
