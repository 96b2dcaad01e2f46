# make demo / make test bootstrap .venv with only a Python 3.11+ on the machine.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo dashboard test lint types pytest slow bootloader bench bench-delta device-package clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: need Python 3.11 or newer on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ota-lab demo

# the demo, then the server and the fleet keep running: it prints the dashboard's URL and a token
dashboard: $(STAMP)
	$(BIN)/ota-lab demo --serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

# Branch coverage of the packages, with a floor (pyproject's fail_under) that only goes up;
# the report is the last thing `make test` prints, with where the dashboard's screenshots are.
pytest: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -q -m "not slow and not bootloader"
	$(BIN)/coverage report
	@echo "browser screenshots of the dashboard: test-artifacts/screens/"

# Our boot script in a real U-Boot under QEMU (u-boot-qemu, qemu-system-arm, mtools, ...).
bootloader: $(STAMP)
	$(BIN)/pytest -q -m bootloader

test: lint types pytest

# The long runs `make test` leaves out (the torture run on the page-cache disk, the QEMU boots);
# CI runs them after `make test`.
slow: $(STAMP)
	$(BIN)/pytest -q -m "slow or bootloader"

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

# What a device installs: the orangefriday-agent wheel and the ota-agent .deb (dpkg-deb), in dist/
# (docs/agent.md#installing-the-device-package, docs/decisions/0020-device-package.md).
device-package: $(STAMP)
	$(BIN)/python agent/packaging/build.py --out dist

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache dist
