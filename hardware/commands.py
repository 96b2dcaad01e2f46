"""Running a boot tool (fw_setenv, grub-editenv, update_engine_client, reboot).

The one place where a tool's failure becomes a BootControlError: a missing binary, a non-zero
exit or a timeout all say which command failed and what it printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from hardware.bootcontrol import BootControlError

TOOL_TIMEOUT_S = 60.0


def run_tool(
    argv: Sequence[str], *, stdin: str | None = None, timeout: float = TOOL_TIMEOUT_S
) -> str:
    """Run `argv`, return its stdout; any failure raises BootControlError."""
    done = _finished(argv, stdin, timeout)
    if done.returncode != 0:
        problem = (done.stderr or done.stdout).strip()[-500:]
        raise BootControlError(f"{_shown(argv)} failed (exit {done.returncode}): {problem}")
    return done.stdout


def follow_tool(
    argv: Sequence[str], on_line: Callable[[str], None], *, timeout: float = TOOL_TIMEOUT_S
) -> str:
    """For a tool that reports on stderr as it goes (`update_engine_client --follow`): its
    stdout and stderr together, whatever the exit code, `on_line` hearing each line as it
    comes; only a missing binary or a timeout raises."""
    try:
        process = subprocess.Popen(  # noqa: S603  # boot tools named by the backend, no shell
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a kill reaches its children too
        )
    except FileNotFoundError:
        raise BootControlError(f"boot tool not found: {argv[0]}") from None
    timed_out = threading.Event()

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def time_out() -> None:
        timed_out.set()
        kill()

    timer = threading.Timer(timeout, time_out)
    timer.start()
    lines: list[str] = []
    try:
        for line in process.stdout or ():
            lines.append(line)
            on_line(line.rstrip("\n"))
        process.wait()
    except BaseException:
        kill()  # whoever stops listening stops the tool too
        process.wait()
        raise
    finally:
        timer.cancel()
        if process.stdout is not None:
            process.stdout.close()
    if timed_out.is_set():
        raise BootControlError(f"{_shown(argv)} did not finish within {timeout:.0f}s")
    return "".join(lines)


def tool_says_yes(argv: Sequence[str], *, timeout: float = TOOL_TIMEOUT_S) -> bool:
    """For tools that answer with their exit code ("returns 0 only if ..."), like bootctl."""
    return _finished(argv, None, timeout).returncode == 0


def _finished(
    argv: Sequence[str], stdin: str | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """The finished run; a missing binary or a timeout raises BootControlError."""
    try:
        return subprocess.run(  # noqa: S603  # boot tools named by the backend, no shell
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise BootControlError(f"boot tool not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise BootControlError(f"{_shown(argv)} did not finish within {timeout:.0f}s") from None


def reboot_and_wait(argv: Sequence[str], wait_s: float) -> None:
    """Ask for a reboot. On hardware the process dies while waiting; if it does not, say so.

    `wait_s = 0` returns at once: for fake reboot commands that boot the fake bootloader
    in place, as the simulated device does.
    """
    run_tool(argv)
    if wait_s <= 0:
        return
    time.sleep(wait_s)
    raise BootControlError(f"{_shown(argv)} returned but the device is still up after {wait_s}s")


def _shown(argv: Sequence[str]) -> str:
    return " ".join(argv)
