# Outpost: `make run` starts relay + sidecar on loopback with conf/dev.toml; `make test` checks everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV    := conf/dev.toml

.PHONY: run test lint fuzz bench bench-quick clean dev-secrets screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Dev secrets and the dev DKIM key live under var/ (ignored by git): generated once, never committed.
dev-secrets: $(STAMP)
	$(PY) -m relay.cli dev-init --config $(DEV)

# Both daemons from one config (make run DEV=conf/other.toml for other ports). The first one to
# exit (a port in use, Ctrl-C) stops the other; make exits with the first one's status.
run: SHELL := /bin/bash
run: dev-secrets
	@$(PY) -m relay.cli config summary --config $(DEV)
	@$(PY) -m sidecar --config $(DEV) & sidecar=$$!; \
	$(PY) -m relay --config $(DEV) & relay=$$!; \
	trap 'kill -TERM $$relay $$sidecar 2>/dev/null' INT TERM; \
	wait -n $$relay $$sidecar; status=$$?; \
	kill -TERM $$relay $$sidecar 2>/dev/null; wait $$relay $$sidecar 2>/dev/null; \
	exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check relay sidecar tests
	$(VENV)/bin/ruff format --check relay sidecar tests
	$(VENV)/bin/mypy relay sidecar

test: lint
	$(VENV)/bin/pytest -q

# The property tests of the parsers with many more examples (make test runs 150 of each).
fuzz: $(STAMP)
	OUTPOST_FUZZ=1 $(VENV)/bin/pytest -q -m fuzz

# the README's dashboard pictures, from the browser test (needs chromium and chromium-driver)
screenshots: $(STAMP)
	OUTPOST_SCREENSHOTS=1 $(VENV)/bin/pytest -q tests/sidecar/test_dashboard_browser.py

bench: $(STAMP)
	$(PY) -m tests.bench.run

bench-quick: $(STAMP)
	$(PY) -m tests.bench.run --quick

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
