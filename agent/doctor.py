"""`ota-agent doctor`: is this device set up to update? One check a line, each saying what
it found or what to fix, in the order a set-up goes: config, identity, trusted root, data
directory, boot backend, server, broker, clock.

The checks only read (the data directory is probed with a file removed at once), except the
broker's: it logs in as the device (the only client id brokers admit for it) without
subscribing or acknowledging anything, so a running agent's session keeps its queued
messages and the agent reconnects by itself within seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3

from agent.config import AgentConfig, load_config
from agent.errors import AgentError
from agent.identity import broker_secret, device_key
from agent.trusted_clock import TRUSTED_TIME_FILE, TrustedClock, system_now
from hardware.bootcontrol import BootControlError
from wire.paths import HEALTH_PATH

BACKEND_DOCS = "docs/agent.md"
HTTP_TIMEOUT = urllib3.Timeout(connect=5.0, read=10.0)
BROKER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    """One line of the doctor's answer: `detail` says what was found, or what to fix."""

    name: str
    ok: bool
    detail: str

    def line(self, width: int) -> str:
        return f"{'ok' if self.ok else 'FAIL':<5} {self.name:<{width}}  {self.detail}"


def ok(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def fail(name: str, detail: str) -> Check:
    return Check(name, False, detail)


def diagnose(config_path: Path, *, clock: Callable[[], datetime] = system_now) -> list[Check]:
    """Every check for the device configured in `config_path` (a config that does not load
    is the only check: the others need it)."""
    try:
        config = load_config(config_path)
    except AgentError as exc:
        return [fail("config", str(exc))]
    checks = [
        ok("config", f"{config_path}: {config.device_id}, {config.model}, {config.channel}"),
        _device_key(config, config_path),
        _trusted_root(config),
        _data_dir(config),
    ]
    checks += _boot_backend(config)
    server = _server(config)
    checks.append(server)
    if server.ok and checks[1].ok:
        checks.append(_sign_in(config))
    checks.append(_broker(config))
    checks.append(_clock(config, clock))
    return checks


def render(checks: Sequence[Check], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}, indent=2
        )
    width = max(len(c.name) for c in checks)
    return "\n".join(c.line(width) for c in checks)


# --------------------------------------------------------------------------- identity, files


def _device_key(config: AgentConfig, config_path: Path) -> Check:
    try:
        key = device_key(config.data_dir)
    except AgentError as exc:
        return fail("device key", f"{exc}: move it away and enroll again")
    if key is None:
        return fail(
            "device key",
            f"none in {config.data_dir}: enroll with "
            f"`ota-agent enroll --config {config_path} --token-file FILE`",
        )
    return ok("device key", f"in {config.data_dir} (public {key.public_key[:12]}...)")


def _trusted_root(config: AgentConfig) -> Check:
    from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]  # no __all__
    from tuf.api.serialization import DeserializationError

    path = config.trusted_root
    fix = "copy the repository's root.json there (`ota keys init` made it)"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return fail("trusted root", f"cannot read {path} ({exc.strerror}): {fix}")
    try:
        root: object = Metadata.from_bytes(raw).signed
    except DeserializationError as exc:
        return fail("trusted root", f"{path} is not a TUF root.json ({exc}): {fix}")
    if not isinstance(root, Root):
        return fail("trusted root", f"{path} holds {type(root).__name__} metadata: {fix}")
    return ok("trusted root", f"{path}: root version {root.version}")


def _data_dir(config: AgentConfig) -> Check:
    """The agent writes its journal, outbox and TUF metadata here (under systemd: a
    ReadWritePaths entry)."""
    folder = config.data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return fail("data dir", f"cannot write in {folder} ({exc.strerror}): make it writable")
    return ok("data dir", f"{folder} is writable")


# --------------------------------------------------------------------------- boot backend


@dataclass(frozen=True)
class _Needs:
    """What a backend needs on the device: programs on PATH, files it reads (and writes)."""

    tools: tuple[str, ...] = ()
    reads: tuple[Path, ...] = ()
    writes: tuple[Path, ...] = ()


def _boot_backend(config: AgentConfig) -> list[Check]:
    backend, options = config.slot_backend, config.slot_options
    name = f"boot ({backend})"
    try:
        needs = _backend_needs(backend, options)
    except BootControlError as exc:
        return [fail(name, f"{exc} (see {BACKEND_DOCS})")]
    checks = list(_requirements(name, needs))
    if not all(c.ok for c in checks):
        return checks
    from hardware.registry import open_boot_control

    try:
        status = open_boot_control(backend, options).status()
    except BootControlError as exc:
        return [*checks, fail(name, f"{exc} (see {BACKEND_DOCS})")]
    return [*checks, ok(name, f"running slot {status.active}, committed {status.committed}")]


def _backend_needs(backend: str, options: Mapping[str, Any]) -> _Needs:
    """Each backend's settings as it reads them from the options (its defaults included);
    a bad option raises BootControlError as it would at start."""
    tools: tuple[str, ...]
    if backend == "sim":
        from hardware.options import required_str

        return _Needs(reads=(Path(required_str(options, "root", "sim")) / "bootenv.json",))
    if backend == "uboot":
        from hardware.uboot import UBootControl

        uboot = UBootControl.from_options(options)
        tools = ("fw_printenv", "fw_setenv", uboot.settings.reboot_command[0])
        return _Needs(tools, (Path(uboot.settings.fw_env_config),), _slot_paths(uboot.slots))
    if backend == "grub":
        from hardware.grub import GrubControl

        grub = GrubControl.from_options(options)
        tools = ("grub-editenv", grub.settings.reboot_command[0])
        return _Needs(tools, writes=(grub.settings.env_file, *_slot_paths(grub.slots)))
    if backend == "tryboot":
        from hardware.tryboot import TrybootControl

        pi = TrybootControl.from_options(options)
        tools = (pi.settings.reboot_command[0], pi.settings.tryboot_command[0])
        return _Needs(tools, writes=(pi.settings.autoboot_path, *_slot_paths(pi.slots)))
    if backend == "android":
        from hardware.android import AndroidControl

        android = AndroidControl.from_options(options)
        s = android.settings
        return _Needs((s.bootctl[0], s.update_engine_client[0], s.reboot_command[0]))
    from hardware.registry import open_boot_control

    open_boot_control(backend, options)  # an unknown backend: its one-line error
    return _Needs()


def _slot_paths(slots: Any) -> tuple[Path, ...]:
    return tuple(slots.devices[s] for s in sorted(slots.devices))


def _requirements(name: str, needs: _Needs) -> Iterator[Check]:
    missing = sorted({t for t in needs.tools if shutil.which(t) is None})
    if missing:
        yield fail(name, f"not on PATH: {', '.join(missing)} (see {BACKEND_DOCS})")
    elif needs.tools:
        yield ok(name, f"tools on PATH: {', '.join(dict.fromkeys(needs.tools))}")
    for path, mode, what in [
        *((p, os.R_OK, "read") for p in needs.reads),
        *((p, os.R_OK | os.W_OK, "read and write") for p in needs.writes),
    ]:
        if not path.exists():
            hint = " (`ota-agent sim provision` makes it)" if path.name == "bootenv.json" else ""
            yield fail(name, f"{path} does not exist{hint} (see {BACKEND_DOCS})")
        elif not os.access(path, mode):
            yield fail(name, f"cannot {what} {path}: the agent runs as root (see {BACKEND_DOCS})")


# --------------------------------------------------------------------------- network


def _server(config: AgentConfig) -> Check:
    url = config.server_url.rstrip("/") + HEALTH_PATH
    http = urllib3.PoolManager(retries=False, timeout=HTTP_TIMEOUT)
    try:
        answer = http.request("GET", url)
    except urllib3.exceptions.HTTPError as exc:
        return fail("server", f"{url} unreachable ({_reason(exc)}): check server_url")
    finally:
        http.clear()
    if answer.status != 200:
        return fail("server", f"{url} answered HTTP {answer.status}: is server_url the server?")
    return ok("server", f"{url} answers")


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ")[-1]


def _sign_in(config: AgentConfig) -> Check:
    from agent.server_api import device_api

    try:
        device_api(config).access_token()
    except AgentError as exc:
        return fail("sign-in", f"the server refused this device's key ({exc}): enroll again")
    return ok("sign-in", f"the server knows {config.device_id} by its key")


def _broker(config: AgentConfig) -> Check:
    if not config.broker_url:
        return ok("broker", "none configured: the agent polls over HTTP")
    from agent.doorbell import parse_broker_url

    try:
        host, port, tls = parse_broker_url(config.broker_url)
        secret = config.broker_secret or broker_secret(config.data_dir)
    except AgentError as exc:
        return fail("broker", str(exc))
    answer = _broker_login(config, host, port, tls=tls, secret=secret)
    if answer:
        return fail("broker", f"{config.broker_url}: {answer}")
    return ok("broker", f"{config.broker_url} accepts {config.device_id}")


def _broker_login(config: AgentConfig, host: str, port: int, *, tls: bool, secret: str) -> str:
    """Log in as the device and out again; "" if the broker accepted, else why not."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from wire import device_client_id

    answered = threading.Event()
    why: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            why.append(f"refused the login ({reason}): check broker_secret / enroll again")
        answered.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=device_client_id(config.device_id),
        clean_session=False,  # the device's session and its queued messages stay
        manual_ack=True,  # nothing heard here is acknowledged: it is redelivered to the agent
    )
    client.on_connect = on_connect
    if secret:
        client.username_pw_set(config.device_id, secret)
    try:
        if tls:
            client.tls_set(ca_certs=config.broker_ca or None)
        client.connect(host, port, keepalive=30)
    except (OSError, ValueError) as exc:
        return f"unreachable ({exc}): check broker_url, broker_ca"
    client.loop_start()
    try:
        if not answered.wait(BROKER_TIMEOUT_S):
            return f"no answer to the login within {BROKER_TIMEOUT_S:.0f}s"
        return why[0] if why else ""
    finally:
        client.disconnect()
        client.loop_stop()


# --------------------------------------------------------------------------- clock


def _clock(config: AgentConfig, clock: Callable[[], datetime]) -> Check:
    path = config.data_dir / TRUSTED_TIME_FILE
    now = clock()
    recorded = TrustedClock(path, system_clock=clock).recorded()
    if recorded is None:
        return ok("clock", f"{now:%Y-%m-%d %H:%M} UTC (no trusted time recorded yet)")
    if now < recorded:
        return fail(
            "clock",
            f"{now:%Y-%m-%d %H:%M} UTC is before the trusted time {recorded:%Y-%m-%d %H:%M} "
            "recorded at the last good refresh: set the clock (NTP, RTC battery)",
        )
    return ok("clock", f"{now:%Y-%m-%d %H:%M} UTC, after the trusted time {recorded:%Y-%m-%d}")
