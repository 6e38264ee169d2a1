# mediascan developer commands. `make run` and `make test` set everything up on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO_DIR := protos
PROTOS := $(wildcard $(PROTO_DIR)/mediascan/v1/*.proto)
ARGS ?=

.PHONY: help all setup run test check ffprobe postgresql protos lint typecheck format demo docs-examples bench bench-quick bench-ab clean

# Bare `make` lists the targets: each target's `## ` comment is its line of help.
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 22

all: protos lint typecheck test ## protos, lint, typecheck and the whole suite

setup: $(STAMP) ## create .venv and install the project with its dev extras

# The virtualenv, with the project installed editable and its dev extras.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mediascan needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "cannot create a virtualenv: on Debian, install it with: sudo apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP) ## start the server (SQLite in ./var); ARGS="--flag ..." passes flags
	$(BIN)/mediascan-server $(ARGS)

# `make test` and `make check` run the tests in TEST_WORKERS processes (pytest-xdist; `auto`: one
# per core); tests marked `xdist_group` run one after the other in one of them (loadgroup).
# TEST_WORKERS=0 runs them all in one process; ARGS come last, so ARGS="-n 0" does too.
TEST_WORKERS ?= auto
XDIST = -n $(TEST_WORKERS) --dist loadgroup

test: $(STAMP) ffprobe postgresql ## the whole test suite; ARGS="-k watch -x" passes options to pytest
	$(BIN)/python -m pytest $(XDIST) $(ARGS)

# The quick everyday run: lint, types and every test not marked slow.
check: lint typecheck ffprobe postgresql ## lint, types and the tests not marked slow (about 2 minutes)
	$(BIN)/python -m pytest -q -m 'not slow' $(XDIST) $(ARGS)

# The tests compare what mediascan reads with ffprobe (Debian's ffmpeg package).
ffprobe: ## install ffprobe (Debian's ffmpeg) when missing and root
	@command -v ffprobe >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's ffmpeg (for ffprobe) ..."; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; \
		else \
			echo "the tests need ffprobe: sudo apt-get install ffmpeg"; exit 1; \
		fi; }

# The tests and the benchmarks start PostgreSQL clusters of their own
# (mediascan.server.testing_postgres): Debian's postgresql
# package gives initdb and pg_ctl; no cluster of the package's is used.
postgresql: ## install PostgreSQL's server (Debian's postgresql) when missing and root
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's postgresql (for the throwaway clusters of tests and benchmarks) ..."; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
		else \
			echo "the tests need PostgreSQL's server programs: sudo apt-get install postgresql"; exit 1; \
		fi; }

# Regenerate the Python modules beside the .proto files (never edit them by hand).
protos: $(STAMP) ## regenerate the Python modules beside the .proto files
	cd $(PROTO_DIR) && ../$(BIN)/python generate.py

lint: $(STAMP) ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on server/ and client/
	$(BIN)/mypy server client

format: $(STAMP) ## ruff format and ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP) ## sample videos, a server and a scan
	$(BIN)/python -m mediascan.server.demo $(ARGS)

# The transcripts of docs/api.md's examples, run again against real servers (tests/test_docs.py
# fails when the committed page no longer matches what the server prints).
docs-examples: $(STAMP) ## run docs/api.md's examples and rewrite their transcripts (about 30 s)
	$(BIN)/python docs/examples.py $(ARGS)

# Benchmarks against same-run baselines (docs/benchmarks.md): one table on stdout, JSON in
# var/bench/. `bench` takes about 30 minutes; `bench-quick` runs everything small in about 2.
bench: $(STAMP) ffprobe postgresql ## benchmarks against same-run baselines (about 30 minutes)
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(STAMP) ffprobe postgresql ## every benchmark, small (about 2 minutes)
	$(BIN)/python -m bench --quick $(ARGS)

bench-ab: $(STAMP) ffprobe postgresql ## BASE=commit: the submit bench on BASE and here, alternately (ARGS for more)
	$(BIN)/python -m bench.ab $(BASE) $(ARGS)

clean: ## remove .venv and the tool caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
