# Outpost: `make run` starts relay + sidecar on loopback with conf/dev.toml; `make test` checks everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV    := conf/dev.toml

.PHONY: run test lint bench bench-quick clean dev-secrets screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Dev secrets live under var/ (ignored by git): generated once, never committed.
dev-secrets: $(STAMP)
	$(PY) -m relay.cli dev-init --config $(DEV)

run: dev-secrets
	@echo "relay: smtp://127.0.0.1:2525  sidecar: http://127.0.0.1:8025  outbox: var/outbox"
	@$(PY) -m sidecar --config $(DEV) & sidecar=$$!; \
	trap 'kill $$sidecar 2>/dev/null; wait $$sidecar' EXIT INT TERM; \
	$(PY) -m relay --config $(DEV)

lint: $(STAMP)
	$(VENV)/bin/ruff check relay sidecar tests
	$(VENV)/bin/ruff format --check relay sidecar tests
	$(VENV)/bin/mypy relay sidecar

test: lint
	$(VENV)/bin/pytest -q

# the README's dashboard pictures, from the browser test (needs chromium and chromium-driver)
screenshots: $(STAMP)
	OUTPOST_SCREENSHOTS=1 $(VENV)/bin/pytest -q tests/sidecar/test_dashboard_browser.py

bench: $(STAMP)
	$(PY) -m tests.bench.run

bench-quick: $(STAMP)
	$(PY) -m tests.bench.run --quick

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
