# One-command setup: both `make run` and `make test` create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run sim test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel
	# CPU torch first, pinned, so nothing pulls the multi-GB CUDA build on a CPU host.
	$(BIN)/pip install torch==2.13.0
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
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
