# mediascan developer commands. `make run` and `make test` set everything up on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO_DIR := protos
PROTOS := $(wildcard $(PROTO_DIR)/mediascan/v1/*.proto)
ARGS ?=

.PHONY: all setup run test ffprobe protos lint typecheck format demo bench bench-quick clean

all: protos lint typecheck test

setup: $(STAMP)

# The virtualenv, with the project installed editable and its dev extras.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mediascan needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "cannot create a virtualenv: on Debian, install it with: sudo apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mediascan-server $(ARGS)

test: $(STAMP) ffprobe
	$(BIN)/python -m pytest $(ARGS)

# The tests compare what mediascan reads with ffprobe (Debian's ffmpeg package).
ffprobe:
	@command -v ffprobe >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's ffmpeg (for ffprobe) ..."; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; \
		else \
			echo "the tests need ffprobe: sudo apt-get install ffmpeg"; exit 1; \
		fi; }

# Regenerate the Python modules beside the .proto files (never edit them by hand).
protos: $(STAMP)
	cd $(PROTO_DIR) && ../$(BIN)/python generate.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy server client

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP)
	$(BIN)/python -m mediascan.server.demo $(ARGS)

# Benchmarks against same-run baselines (docs/benchmarks.md): one table on stdout, JSON in
# var/bench/. `bench` takes about 10 minutes; `bench-quick` runs everything small in under one.
bench: $(STAMP) ffprobe
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(STAMP) ffprobe
	$(BIN)/python -m bench --quick $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
