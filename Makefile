# One-command entry points. `make run` and `make test` each create the virtual
# environment on first use, so a fresh machine needs nothing but Python 3.11 and make.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard's browser libraries (npm, pinned by package-lock.json; never committed).
ASSETS := node_modules/.package-lock.json
HOST ?= 127.0.0.1
PORT ?= 8000
# pytest workers: 0 runs the suite in this process; 2 runs the real-vLLM tier on one worker
# and the rest on the other (tests/plugins/parallel.py).
TEST_WORKERS ?= 0

.PHONY: run test lint typecheck venv assets bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(ASSETS): package.json package-lock.json
	scripts/install-assets.sh

assets: $(ASSETS)

run: $(STAMP) $(ASSETS)
	$(BIN)/python manage.py llmux serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG),)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy llmux_site models_app checkpoints_app dashboard

test: $(STAMP) $(ASSETS) lint typecheck
	scripts/ci-services.sh
	scripts/install-criu.sh >/dev/null
	scripts/install-chromium.sh >/dev/null
	scripts/install-vllm.sh >/dev/null
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder \
		$(if $(filter-out 0,$(TEST_WORKERS)),--basetemp=$$(mktemp -d /tmp/lt-XXXXXX)) $(PYTEST_ARGS)

# Benchmarks of the gateway and of switching; writes docs/PERFORMANCE.md.
bench: $(STAMP) $(ASSETS)
	@test -x /usr/sbin/nginx || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null)
	scripts/ci-services.sh
	$(BIN)/python scripts/bench_report.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules data test-output .pytest_cache .mypy_cache .ruff_cache
