# sora_proxy: `make serve` runs the proxy (against the built-in simulator unless
# SORA_PROXY_UPSTREAM_URL is set); `make test` runs lint and the whole test suite.
# Both create .venv and install everything on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "make: python3 -m venv failed; installing Debian's python3-venv"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
	  && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

serve: $(STAMP)
	$(BIN)/sora-proxy serve

lint: $(STAMP)
	$(BIN)/ruff check sora_proxy tests wsgi.py config bench examples

test: lint
	bash .ci/debian-packages
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# `make bench`: install what the benchmark needs (wrk, nginx, LiteLLM in bench/.litellm-venv,
# matplotlib), then run sora_proxy, nginx and LiteLLM side by side on 127.0.0.1 and write
# bench/results/latest.{md,png,json}. BENCH_ARGS=--quick for a short smoke run.
.PHONY: bench
bench: $(STAMP)
	bash bench/install.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)
