# One-command setup: both `make run` and `make test` create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# torch is pinned; off this machine, point TORCH_INDEX at the CPU wheel index so pip does not
# fetch the multi-GB CUDA build from PyPI:  make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# e.g. make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
# Every library version the product runs on is pinned here; `make lock` refreshes it (see README).
CONSTRAINTS := constraints.txt
# The peer gateway bench/gateway_overhead.py compares against, pinned, in a venv of its own.
LITELLM_VENV := .bench/litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed

.PHONY: run sim test lint bench lock clean browser

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel
	# torch first, pinned, so the extras below do not pick another build (see TORCH_INDEX above).
	$(BIN)/pip install '$(TORCH_SPEC)' $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -c $(CONSTRAINTS) -e '.[local,dev]'
	touch $(STAMP)

$(LITELLM_STAMP): bench/requirements-litellm.txt
	test -d $(LITELLM_VENV) || $(PY) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -r bench/requirements-litellm.txt
	touch $(LITELLM_STAMP)

run: $(STAMP)
	$(BIN)/talkgate serve --host $(HOST) --port $(PORT)

sim: $(STAMP)
	$(BIN)/talkgate sim --port 8100 --nls-port 8101

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The live-avatar page test drives Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

bench: $(STAMP) $(LITELLM_STAMP)
	LITELLM_VENV=$(abspath $(LITELLM_VENV)) $(BIN)/python -m bench.run_all $(BENCH_ARGS)

# Re-resolve the newest releases into constraints.txt (then run `make test` and commit it).
lock:
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/pip install --upgrade pip wheel
	.lock-venv/bin/pip install '$(TORCH_SPEC)' $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	.lock-venv/bin/pip install -e '.[local,dev]'
	{ head -n 3 $(CONSTRAINTS); .lock-venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(torch|talkgate)[=@ ]' | sort -f; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf .lock-venv

clean:
	rm -rf $(VENV) .bench .pytest_cache .ruff_cache
