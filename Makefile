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

.PHONY: setup demo test test-slow test-all test-fast bench lint clean reliability

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

# make test: everything but the tests marked slow (under 40 min on a fresh clone of 2 cores);
# make test-slow: those (full tiles, the demo pipeline, packed environments, killed clusters,
# Airflow end to end); CI (.ci/run) runs both, the whole suite.
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

test-all: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not cluster and not interop"

# The fault tests of RELIABILITY.md, then its totals computed from this run (build/reliability/).
RELIABILITY_TESTS := tests/faults tests/spark/test_faults.py tests/spark/test_failures.py \
	tests/train/test_trainer_loss.py tests/spark/test_trainer_loss_cluster.py \
	tests/train/test_loop.py::test_resume_after_kill_matches_uninterrupted \
	tests/spark/test_bad_input.py tests/spark/test_label_engines.py::test_bad_clc_gives_the_same_named_error \
	tests/spark/test_import_v1.py tests/s3/test_s3_build.py::test_first_failure_on_s3_commits_nothing \
	tests/s3/test_s3_io.py::test_a_task_that_outlives_an_aborted_run_removes_its_uploads \
	tests/s3/test_s3_build.py::test_killed_s3_build_leaves_nothing_readers_accept_and_the_rerun_completes
reliability: setup
	@mkdir -p build/reliability
	-BIGEARTHNET_FAULTS_SUMMARY=$(abspath build/reliability/faults_summary.json) \
		$(BIN)/python -m pytest -q $(RELIABILITY_TESTS) --junitxml=build/reliability/junit.xml
	$(BIN)/python scripts/reliability_totals.py build/reliability/junit.xml \
		build/reliability/faults_summary.json --write RELIABILITY.md

bench: setup
	$(BIN)/python bench/run.py

lint: setup
	$(BIN)/ruff check lib tests bench jobs dags

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
