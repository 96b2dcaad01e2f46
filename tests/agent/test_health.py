"""Health checks after a trial boot: real commands, a fake systemctl, a real HTTP server."""

from __future__ import annotations

import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.health import (
    LOG_EXCERPT_LIMIT,
    OUTPUT_TAIL_LIMIT,
    CallableCheck,
    CommandCheck,
    HealthCheck,
    HealthResult,
    HttpReachableCheck,
    SystemdUnitCheck,
    bounded_tail,
    health_checks_from_config,
    run_health_checks,
)
from lab.net import free_port
from signing.testing import serve_directory

PY = sys.executable


# --------------------------------------------------------------------------- commands


def test_a_command_that_exits_zero_is_healthy() -> None:
    assert CommandCheck([PY, "-c", "print('fine')"]).run(10) is None


def test_a_failing_command_says_its_exit_code_and_output() -> None:
    check = CommandCheck([PY, "-c", "import sys; print('db down'); sys.exit(3)"], name="app")
    problem = check.run(10)
    assert problem is not None
    assert "exited 3" in problem.splitlines()[0]
    assert "db down" in problem
    assert check.name == "app"


def test_only_a_bounded_tail_of_the_output_is_kept() -> None:
    chatty = "import sys; sys.stdout.write('x' * 3_000_000 + 'THE END'); sys.exit(1)"
    problem = CommandCheck([PY, "-c", chatty]).run(30)
    assert problem is not None
    assert problem.endswith("THE END")
    assert len(problem) < OUTPUT_TAIL_LIMIT + 200


def test_a_command_past_its_timeout_is_killed_with_its_children() -> None:
    started = time.monotonic()
    problem = CommandCheck(["sh", "-c", "echo started; sleep 30 & sleep 30"]).run(0.3)
    assert problem is not None
    assert "did not finish within 0.3s" in problem
    assert "started" in problem
    assert time.monotonic() - started < 5


def test_a_missing_command_is_a_problem_not_a_crash() -> None:
    problem = CommandCheck(["/nonexistent/self-test"]).run(5)
    assert problem is not None
    assert problem.startswith("cannot run /nonexistent/self-test")


def test_a_command_check_needs_a_command() -> None:
    with pytest.raises(ValueError, match="list of strings"):
        CommandCheck([])


# --------------------------------------------------------------------------- systemd


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> Path:
    """Answers like `systemctl is-active --quiet UNIT`: only good.service is active."""
    script = tmp_path / "systemctl"
    calls = tmp_path / "calls"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$3" = "good.service" ]\n')
    script.chmod(0o755)
    return script


def test_an_active_unit_is_healthy(fake_systemctl: Path) -> None:
    check = SystemdUnitCheck("good.service", systemctl=str(fake_systemctl))
    assert check.run(5) is None
    calls = (fake_systemctl.parent / "calls").read_text().split()
    assert calls == ["is-active", "--quiet", "good.service"]
    assert check.name == "good.service"


def test_an_inactive_unit_is_named(fake_systemctl: Path) -> None:
    problem = SystemdUnitCheck("nginx.service", systemctl=str(fake_systemctl)).run(5)
    assert problem is not None
    assert problem.startswith("unit nginx.service is not active")


# --------------------------------------------------------------------------- http


@pytest.fixture(scope="module")
def http_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`/ok` answers 200, `/moved` 301 (a directory without its slash), the rest 404."""
    root = tmp_path_factory.mktemp("www")
    (root / "ok").write_text("fine")
    (root / "moved").mkdir()
    with serve_directory(root) as base:
        yield base


@pytest.mark.parametrize("path", ["/ok", "/moved"])
def test_a_2xx_or_3xx_answer_is_healthy(http_base: str, path: str) -> None:
    assert HttpReachableCheck(http_base + path).run(5) is None


def test_an_error_status_is_a_problem(http_base: str) -> None:
    problem = HttpReachableCheck(http_base + "/missing").run(5)
    assert problem == f"{http_base}/missing answered HTTP 404"


def test_nothing_listening_is_a_problem() -> None:
    problem = HttpReachableCheck(f"http://127.0.0.1:{free_port()}/healthz").run(5)
    assert problem is not None
    assert "unreachable" in problem


def test_only_http_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpReachableCheck("file:///etc/passwd")


# --------------------------------------------------------------------------- callables


def test_a_callable_check_answers_for_itself() -> None:
    assert CallableCheck("device", lambda: None).run(1) is None
    assert CallableCheck("device", lambda: "switched off").run(1) == "switched off"


def test_a_callable_with_an_os_error_is_unhealthy() -> None:
    def broken() -> str | None:
        raise OSError(5, "Input/output error")

    problem = CallableCheck("sensor", broken).run(1)
    assert problem is not None
    assert problem.startswith("sensor failed")


# --------------------------------------------------------------------------- the run


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def timed(clock: FakeClock, name: str, takes: float, answers: list[str | None]) -> CallableCheck:
    """A check that takes `takes` seconds of the fake clock and gives `answers` in turn."""

    def run() -> str | None:
        clock.now += takes
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return CallableCheck(name, run)


def run_with(
    clock: FakeClock, checks: list[HealthCheck], deadline: float, retry: float = 0.0
) -> HealthResult:
    return run_health_checks(
        checks, deadline, retry_interval_s=retry, clock=clock, sleep=clock.sleep
    )


def test_all_healthy_is_ok_and_says_what_ran() -> None:
    clock = FakeClock()
    checks: list[HealthCheck] = [timed(clock, "a", 1, [None]), timed(clock, "b", 1, [None])]
    result = run_with(clock, checks, deadline=10)
    assert result.ok
    assert (result.failed_check, result.problem) == ("", "")
    assert "a: ok" in result.log_excerpt
    assert "b: ok" in result.log_excerpt


def test_no_checks_is_healthy() -> None:
    assert run_health_checks([], 1.0).ok


def test_the_first_failing_check_is_named_and_the_rest_do_not_run() -> None:
    clock = FakeClock()
    checks: list[HealthCheck] = [
        timed(clock, "a", 1, [None]),
        timed(clock, "b", 1, ["port 80 closed\nmore detail"]),
        timed(clock, "c", 1, [None]),
    ]
    result = run_with(clock, checks, deadline=10)
    assert not result.ok
    assert result.failed_check == "b"
    assert result.problem == "port 80 closed"
    assert "b: FAIL port 80 closed" in result.log_excerpt
    assert "c:" not in result.log_excerpt


def test_a_check_running_past_the_deadline_fails_by_name() -> None:
    clock = FakeClock()
    checks: list[HealthCheck] = [timed(clock, "quick", 1, [None]), timed(clock, "hang", 60, [None])]
    result = run_with(clock, checks, deadline=10)
    assert not result.ok
    assert result.failed_check == "hang"
    assert "deadline" in result.problem


def test_no_time_left_fails_the_check_that_would_run_next() -> None:
    clock = FakeClock()
    checks: list[HealthCheck] = [timed(clock, "slow", 10, [None]), timed(clock, "next", 0, [None])]
    result = run_with(clock, checks, deadline=10)
    assert result.failed_check == "next"
    assert "no time left" in result.problem


def test_a_real_command_is_stopped_at_the_overall_deadline() -> None:
    started = time.monotonic()
    checks: list[HealthCheck] = [CommandCheck(["sleep", "30"], name="sleeper")]
    result = run_health_checks(checks, 0.3)
    assert not result.ok
    assert result.failed_check == "sleeper"
    assert time.monotonic() - started < 5


def test_with_retries_a_service_that_comes_up_late_passes() -> None:
    clock = FakeClock()
    starting = timed(clock, "nginx", 0.1, ["activating", "activating", None])
    result = run_with(clock, [starting], deadline=10, retry=1.0)
    assert result.ok
    assert result.log_excerpt.count("nginx: FAIL activating") == 2


def test_with_retries_a_service_that_never_comes_up_fails_at_the_deadline() -> None:
    clock = FakeClock()
    result = run_with(clock, [timed(clock, "nginx", 0.1, ["inactive"])], deadline=30, retry=0.5)
    assert not result.ok
    assert result.problem == "inactive"
    assert clock.now <= 1000 + 30
    assert len(result.log_excerpt) <= LOG_EXCERPT_LIMIT


def test_bounded_tail_keeps_the_end() -> None:
    assert bounded_tail("short", 100) == "short"
    cut = bounded_tail("x" * 50 + "END", 20)
    assert len(cut) == 20
    assert cut.startswith("[...]")
    assert cut.endswith("END")


# --------------------------------------------------------------------------- config


def test_checks_from_config() -> None:
    checks = health_checks_from_config(
        [
            {"type": "command", "argv": ["/usr/bin/self-test", "--quick"], "name": "self"},
            {"type": "systemd", "unit": "nginx.service", "systemctl": "/bin/systemctl"},
            {"type": "http", "url": "http://127.0.0.1:8080/healthz"},
        ]
    )
    kinds: list[type] = [CommandCheck, SystemdUnitCheck, HttpReachableCheck]
    assert [type(c) for c in checks] == kinds
    assert [c.name for c in checks] == ["self", "nginx.service", "http://127.0.0.1:8080/healthz"]


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        ({"type": "ping"}, "type must be one of"),
        ({"argv": ["x"]}, "type must be one of"),
        ({"type": "command"}, "missing key 'argv'"),
        ({"type": "command", "argv": "reboot now"}, "list of strings"),
        ({"type": "command", "argv": ["ok", 3]}, "list of strings"),
        ({"type": "command", "argv": ["x"], "timeout": 3}, "unknown keys"),
        ({"type": "systemd", "unit": 7}, "expected a string"),
        ({"type": "http", "url": "ftp://host/"}, "http"),
    ],
)
def test_a_bad_check_table_is_a_config_error(item: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as raised:
        health_checks_from_config([{"type": "http", "url": "http://ok/"}, item])
    assert "#2" in str(raised.value)


def test_a_health_check_is_anything_with_a_name_and_run() -> None:
    class Custom:
        name = "custom"

        def run(self, timeout_s: float) -> str | None:
            return None if timeout_s > 0 else "no time"

    checks: list[HealthCheck] = [Custom()]
    assert run_health_checks(checks, 1).ok


def test_a_failed_check_says_which_its_output_and_what_to_do() -> None:
    script = "print('degraded'); print('2 units failed'); raise SystemExit(1)"
    result = run_health_checks([CommandCheck([PY, "-c", script], name="system")], 30)
    explained = result.explanation()
    assert "health check 'system' failed" in explained
    assert "its output: degraded | 2 units failed" in explained
    assert "run that check by hand" in explained
    assert "\n" not in explained  # one log line


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readmes_health_check_is_one_a_healthy_raspberry_pi_passes() -> None:
    """`systemctl is-system-running` says degraded on healthy Raspberry Pi OS installs: the
    README's example config must not roll every device back."""
    text = README.read_text()
    block = text[text.index("[[health.check]]") :]
    block = block[: block.index("```")]
    table = tomllib.loads(block)
    checks = health_checks_from_config(table["health"]["check"])
    assert [type(c) for c in checks] == [SystemdUnitCheck]
    assert isinstance(checks[0], SystemdUnitCheck)
    assert checks[0].unit == "multi-user.target"
