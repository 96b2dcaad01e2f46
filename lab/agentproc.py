"""The agent as a real process on a lab backend: its TOML config written from an `AgentConfig`,
`ota-agent run` (or the crash harness, lab.crashagent) started with its log in a file, and
waits for lines of that log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import AgentConfig

STOP_TIMEOUT_S = 15.0


def toml_config(config: AgentConfig) -> str:
    """`config` as the TOML file `ota-agent run --config` reads (JSON strings are TOML's)."""
    top: dict[str, Any] = {
        "device_id": config.device_id,
        "model": config.model,
        "channel": config.channel,
        "server_url": config.server_url,
        "broker_url": config.broker_url,
        "broker_urls": list(config.broker_urls),
        "broker_secret": config.broker_secret,  # "" = the one kept in data_dir
        "data_dir": str(config.data_dir),
        "trusted_root": str(config.trusted_root),
        "poll_interval_s": config.poll_interval_s,
        "poll_jitter": config.poll_jitter,
    }
    slot = {"backend": config.slot_backend, **config.slot_options}
    health = {"deadline_s": config.health_deadline_s, "retry_interval_s": config.health_retry_s}
    lines = [*_pairs(top), "[slot]", *_pairs(slot), "[health]", *_pairs(health)]
    for check in config.health_checks:
        lines += ["[[health.check]]", *_pairs(check)]
    return "\n".join(lines) + "\n"


def _pairs(table: dict[str, Any]) -> list[str]:
    return [f"{key} = {json.dumps(value)}" for key, value in table.items()]


@dataclass
class AgentProcess:
    """One running agent process and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, needle: str) -> int:
        return self.text().count(needle)

    def wait_for(self, needle: str, timeout: float = 30.0, *, times: int = 1) -> None:
        """Until `needle` is in the log `times` times; AssertionError (with the log) if not."""
        deadline = time.monotonic() + timeout
        while self.count(needle) < times:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no {needle!r} x{times} in the agent's log:\n{self.text()}")
            time.sleep(0.05)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> float:
        """Send `how`; the seconds until the process exited."""
        sent = time.monotonic()
        self.proc.send_signal(how)
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        return time.monotonic() - sent


def agent_command(config_file: Path) -> list[str]:
    """`ota-agent run` from this environment."""
    return [str(Path(sys.executable).parent / "ota-agent"), "run", "--config", str(config_file)]


def crash_agent_command(config_file: Path, die: str, *, ack_first: bool = False) -> list[str]:
    """The crash harness (lab.crashagent): dies at `die` when a command arrives."""
    extra = ["--ack-first"] if ack_first else []
    return [sys.executable, "-m", "lab.crashagent", str(config_file), "--die", die, *extra]


@contextmanager
def agent_process(command: Sequence[str], log: Path) -> Iterator[AgentProcess]:
    """Run `command` with stdout and stderr in `log`; killed at the end if still running."""
    with log.open("ab") as out:
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT)
    try:
        yield AgentProcess(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
