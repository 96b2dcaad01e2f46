"""Health checks run after a trial boot: the new slot is committed only if all of them pass.

The device owner configures them (`[[health.check]]` tables in the agent's TOML):

    [[health.check]]
    type = "command"            # exit 0 within the deadline = healthy
    argv = ["/usr/bin/my-app", "--self-test"]

    [[health.check]]
    type = "systemd"            # `systemctl is-active --quiet UNIT`
    unit = "nginx.service"

    [[health.check]]
    type = "http"               # any 2xx or 3xx answer = healthy (redirects are not followed)
    url = "http://127.0.0.1:8080/healthz"

Every check may have a `name` (default: derived from what it runs). Checks run in order,
under one overall deadline; with `retry_interval_s` a failing check is tried again until it
passes or the deadline is spent (services may still be starting right after boot). A check
still running at the deadline fails the trial, naming that check. A check that raises is a bug
in it: the exception propagates, and the runner's crash-loop guard ends the trial.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final, Protocol

from agent.errors import AgentError, ConfigError

LOG_EXCERPT_LIMIT: Final = 4096  # characters of log a report carries
OUTPUT_TAIL_LIMIT: Final = 2048  # bytes of a command's output kept
_KILL_GRACE_S: Final = 2.0


class HealthCheck(Protocol):
    """One check. `run` answers None when healthy, else what is wrong (may span lines)."""

    name: str

    def run(self, timeout_s: float) -> str | None: ...


WHAT_TO_DO: Final = (
    "the new slot is rolled back; run that check by hand on a device with the new build to see"
    " why, then fix the build or the check (a check must pass on a healthy device:"
    " `systemctl is-system-running` says degraded on many healthy ones, where"
    " `systemctl is-active --quiet multi-user.target` passes)"
)


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    failed_check: str = ""
    problem: str = ""  # one line
    log_excerpt: str = ""  # what ran, and the failing check's output; bounded
    output: str = ""  # the failing check's output (what its problem said past the first line)

    def explanation(self) -> str:
        """For the log, on one line: which check failed, its output, and what to do."""
        if self.ok:
            return "all health checks passed"
        output = " | ".join(line for line in self.output.splitlines() if line.strip())
        return (
            f"health check {self.failed_check!r} failed: {self.problem}"
            f"; its output: {output or '(none)'}; {WHAT_TO_DO}"
        )


# --------------------------------------------------------------------------- checks


class _OutputTail:
    """Reads a pipe to its end in a thread, keeping only the last `limit` bytes."""

    def __init__(self, pipe: IO[bytes], limit: int = OUTPUT_TAIL_LIMIT) -> None:
        self._pipe = pipe
        self._limit = limit
        self._tail = bytearray()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self._pipe.fileno(), 65536):
            self._tail += chunk
            del self._tail[: -self._limit]

    def finish(self) -> str:
        """The tail, once the pipe is closed by every writer (or after a grace period)."""
        self._thread.join(_KILL_GRACE_S)
        if not self._thread.is_alive():  # else a grandchild holds the pipe: leave it be
            self._pipe.close()
        return bytes(self._tail).decode(errors="replace").strip()


class CommandCheck:
    """Healthy when `argv` exits 0 within the timeout. Keeps a bounded tail of its output."""

    def __init__(self, argv: Sequence[str], name: str = "") -> None:
        if not argv or not all(isinstance(arg, str) and arg for arg in argv):
            raise ValueError(f"a command check needs a list of strings to run, not {argv!r}")
        self.argv = list(argv)
        self.name = name or os.path.basename(self.argv[0])

    def run(self, timeout_s: float) -> str | None:
        try:
            proc = subprocess.Popen(  # noqa: S603  # argv from the owner's config, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills it whole
            )
        except OSError as exc:
            return f"cannot run {self.argv[0]}: {exc.strerror or exc}"
        if proc.stdout is None:  # Popen(stdout=PIPE) always has one; -O must not hide a change
            raise RuntimeError(f"{self.argv[0]}: no output pipe")
        output = _OutputTail(proc.stdout)
        try:
            code = proc.wait(timeout=max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return _with_output(f"did not finish within {timeout_s:.1f}s", output.finish())
        text = output.finish()
        if code == 0:
            return None
        return _with_output(self._exit_problem(code), text)

    def _exit_problem(self, code: int) -> str:
        if code < 0:
            return f"{self.argv[0]} killed by signal {-code}"
        return f"{self.argv[0]} exited {code}"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended by itself just now
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # unkillable (D state): report anyway
        proc.wait(timeout=_KILL_GRACE_S)


def _with_output(problem: str, output: str) -> str:
    return f"{problem}\n{output}" if output else problem


class SystemdUnitCheck:
    """Healthy when `systemctl is-active --quiet UNIT` says so."""

    def __init__(self, unit: str, name: str = "", systemctl: str = "systemctl") -> None:
        if not unit:
            raise ValueError("a systemd check needs a unit")
        self.unit = unit
        self.name = name or unit
        self._command = CommandCheck([systemctl, "is-active", "--quiet", unit], self.name)

    def run(self, timeout_s: float) -> str | None:
        problem = self._command.run(timeout_s)
        if problem is None:
            return None
        return f"unit {self.unit} is not active ({problem})"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # a 3xx answer is itself proof that the service is up


class HttpReachableCheck:
    """Healthy when `url` answers 2xx or 3xx. No proxy: it probes the device itself."""

    def __init__(self, url: str, name: str = "") -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"an http check needs an http(s) URL, not {url!r}")
        self.url = url
        self.name = name or url
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    def run(self, timeout_s: float) -> str | None:
        try:
            with self._opener.open(self.url, timeout=max(timeout_s, 0.001)) as answer:
                status = int(answer.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            return f"{self.url} unreachable: {_why(exc)}"
        if 200 <= status < 400:
            return None
        return f"{self.url} answered HTTP {status}"


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc) or type(exc).__name__


class CallableCheck:
    """An in-process check: `fn()` answers None when healthy, else the problem."""

    def __init__(self, name: str, fn: Callable[[], str | None]) -> None:
        self.name = name
        self._fn = fn

    def run(self, timeout_s: float) -> str | None:  # must be quick: it cannot be interrupted
        try:
            return self._fn()
        except (AgentError, OSError) as exc:
            return f"{self.name} failed: {exc}"


# --------------------------------------------------------------------------- running them


def run_health_checks(
    checks: Sequence[HealthCheck],
    deadline_s: float,
    *,
    retry_interval_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthResult:
    """Run `checks` in order within `deadline_s`; the first that stays unhealthy fails all.

    With `retry_interval_s > 0` a failing check is run again after that pause, as long as
    time is left: right after boot a service may still be starting.
    """
    run = _Run(deadline=clock() + deadline_s, deadline_s=deadline_s, clock=clock)
    for check in checks:
        problem = run.until_healthy(check, retry_interval_s, sleep)
        if problem is not None:
            return run.failed(check.name, problem)
    return HealthResult(ok=True, log_excerpt=run.excerpt())


@dataclass
class _Run:
    deadline: float
    deadline_s: float
    clock: Callable[[], float]
    lines: list[str] = field(default_factory=list)

    def until_healthy(
        self, check: HealthCheck, retry_interval_s: float, sleep: Callable[[float], None]
    ) -> str | None:
        while True:
            problem = self.once(check)
            if problem is None or retry_interval_s <= 0:
                return problem
            if self.deadline - self.clock() <= retry_interval_s:
                return problem
            sleep(retry_interval_s)

    def once(self, check: HealthCheck) -> str | None:
        started = self.clock()
        remaining = self.deadline - started
        if remaining <= 0:
            return self._note(check.name, 0.0, f"no time left of the {self.deadline_s:g}s deadline")
        problem = check.run(remaining)
        took = self.clock() - started
        if self.clock() > self.deadline + _KILL_GRACE_S:
            problem = f"still running at the {self.deadline_s:g}s deadline (took {took:.1f}s)"
        return self._note(check.name, took, problem)

    def _note(self, name: str, took: float, problem: str | None) -> str | None:
        verdict = "ok" if problem is None else f"FAIL {problem}"
        self.lines.append(f"[{took:6.2f}s] {name}: {verdict}")
        return problem

    def failed(self, name: str, problem: str) -> HealthResult:
        lines = problem.strip().splitlines() or ["unhealthy"]
        return HealthResult(
            ok=False,
            failed_check=name,
            problem=lines[0][:300],
            log_excerpt=self.excerpt(),
            output=bounded_tail("\n".join(lines[1:]), OUTPUT_TAIL_LIMIT),
        )

    def excerpt(self) -> str:
        return bounded_tail("\n".join(self.lines), LOG_EXCERPT_LIMIT)


def bounded_tail(text: str, limit: int) -> str:
    """`text`, or its last part with a marker if it is longer than `limit` characters."""
    if len(text) <= limit:
        return text
    marker = "[...]\n"
    return marker + text[len(text) - (limit - len(marker)) :]


# --------------------------------------------------------------------------- configuration

_CHECK_FIELDS: Final[dict[str, set[str]]] = {
    "command": {"argv"},
    "systemd": {"unit", "systemctl"},
    "http": {"url"},
}


def health_checks_from_config(items: Sequence[dict[str, Any]]) -> list[HealthCheck]:
    """The checks `[[health.check]]` tables describe; a bad table raises ConfigError."""
    return [_check_from_config(i, item) for i, item in enumerate(items, start=1)]


def _check_from_config(number: int, item: dict[str, Any]) -> HealthCheck:
    where = f"[[health.check]] #{number}"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table")
    kind = item.get("type")
    if kind not in _CHECK_FIELDS:
        raise ConfigError(f"{where}: type must be one of {sorted(_CHECK_FIELDS)}, not {kind!r}")
    unknown = set(item) - _CHECK_FIELDS[kind] - {"type", "name"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        return _build_check(kind, item)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where} ({kind}): {_config_problem(exc)}") from None


def _build_check(kind: str, item: dict[str, Any]) -> HealthCheck:
    name = _text(item.get("name", ""))
    if kind == "command":
        argv = item["argv"]
        if not isinstance(argv, list):
            raise TypeError("argv must be a list of strings")
        return CommandCheck(argv, name)
    if kind == "systemd":
        systemctl = _text(item.get("systemctl", "systemctl"))
        return SystemdUnitCheck(_text(item["unit"]), name, systemctl)
    return HttpReachableCheck(_text(item["url"]), name)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _config_problem(exc: Exception) -> str:
    return f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
