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

.PHONY: run sim test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel
	# torch first, pinned, so the extras below do not pick another build (see TORCH_INDEX above).
	$(BIN)/pip install '$(TORCH_SPEC)' $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -e '.[local,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/talkgate serve --host $(HOST) --port $(PORT)

sim: $(STAMP)
	$(BIN)/talkgate sim --port 8100

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
