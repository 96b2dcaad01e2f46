"""`ota` start-up (issue 11): how long each command spends importing before it runs.

For each command, runs `python -X importtime` on `ota ARGS` RUNS times in fresh processes and
sums the top-level cumulative import times (what the interpreter spends in `import` from the
first to the last, typer's and our own lazy imports included; start-up of the interpreter
itself and the command's work are not counted). Prints one line a command: the fastest and the
median run in ms. Run with another checkout first on PYTHONPATH to measure that one.

Run: .venv/bin/python bench/cli_startup.py [--runs N] [-- ARGS ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

COMMANDS = [
    "--help",
    "keys --help",
    "keys init --help",
    "repo status --help",
    "release publish --help",
    "devices --help",
    "token list --help",
    "rollout --help",
    "health --help",
]
RUN_OTA = "from server.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"


def import_ms(args: list[str]) -> float:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", RUN_OTA, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    total_us = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # a top-level import: nested ones are indented more
            total_us += int(cumulative)
    return total_us / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("args", nargs="*", help="one command's arguments (default: a list)")
    options = parser.parse_args()
    commands = [" ".join(options.args)] if options.args else COMMANDS
    for command in commands:
        runs = [import_ms(command.split()) for _ in range(options.runs)]
        print(f"ota {command}: min {min(runs):.0f} ms, median {statistics.median(runs):.0f} ms")


if __name__ == "__main__":
    main()
