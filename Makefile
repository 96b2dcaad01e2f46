# make demo / make test bootstrap .venv with only a Python 3.11+ on the machine.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types pytest bench bench-delta clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: need Python 3.11 or newer on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ota demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

# Branch coverage of the packages, with a floor (pyproject's fail_under) that only goes up;
# the report is the last thing `make test` prints.
pytest: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -q -m "not slow"
	$(BIN)/coverage report

test: lint types pytest

bench: $(STAMP)
	$(BIN)/python bench/install.py --size-mb 256

# The delta benchmark's peers live in their own environment (not the agent's).
.venv-bench/.installed: bench/requirements-delta.txt
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet -r bench/requirements-delta.txt
	@touch .venv-bench/.installed

ROM_OLD ?= /tmp/rompair/rom_old.img
ROM_NEW ?= /tmp/rompair/rom_new.img
bench-delta: $(STAMP) .venv-bench/.installed
	@command -v bsdiff >/dev/null && command -v xdelta3 >/dev/null && command -v zstd >/dev/null \
		|| echo "missing Debian tools: apt-get install bsdiff xdelta3 zstd" >&2
	nice $(BIN)/python bench/delta.py $(ROM_OLD) $(ROM_NEW)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
