# sora_proxy: `make serve` runs the proxy (against the built-in simulator unless
# SORA_PROXY_UPSTREAM_URL is set); `make test` runs lint and the whole test suite.
# Both create .venv on first use; serve installs only what serving needs, test adds the
# test and dev extras. Each install has its own stamp, redone when the packaging changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP  := $(VENV)/.installed-test

.PHONY: serve test lint clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "make: python3 -m venv failed; installing Debian's python3-venv"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
	  && $(PYTHON) -m venv $(VENV); }
	@$(PIP) -qq --upgrade pip

# -qq: pip shows build-backend warnings even with -q, and setuptools always explains that an
# install is editable; serving needs none of that (errors still show).
$(SERVE_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "make: installing sora_proxy into $(VENV)"
	@$(PIP) -qq -e .
	@touch $@

$(TEST_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "make: installing sora_proxy with its test and dev extras into $(VENV)"
	@$(PIP) -q -e '.[test,dev]'
	@touch $@ $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/sora-proxy serve

LINTED := sora_proxy tests wsgi.py config bench examples

# ruff's rules and formatting on everything; mypy --strict on the package (pyproject.toml).
lint: $(TEST_STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

test: lint
	bash .ci/debian-packages
	bash .ci/node-packages
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# `make bench`: install what the benchmark needs (wrk, nginx, LiteLLM in bench/.litellm-venv,
# matplotlib), then run sora_proxy, nginx and LiteLLM side by side on 127.0.0.1 and write
# bench/results/latest.{md,png,json}; then slow clients (bench/slow_clients.py: slow readers
# and uploaders against a probe, through nginx and directly) to bench/results/slow_clients.*.
# BENCH_ARGS=--quick for a short smoke run of both (other BENCH_ARGS go to run.py only);
# SLOW_CLIENTS_ARGS go to slow_clients.py (e.g. --modes nginx, --grid "nginx=1024x256").
.PHONY: bench
bench: $(TEST_STAMP)
	bash bench/install.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/slow_clients.py $(filter --quick,$(BENCH_ARGS)) $(SLOW_CLIENTS_ARGS)
