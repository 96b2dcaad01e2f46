"""The agent's configuration: one TOML file, validated once, then plain data."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.doorbell import parse_broker_urls
from agent.errors import ConfigError
from wire import ProtocolError, channel_topic


@dataclass(frozen=True)
class AgentConfig:
    device_id: str
    model: str
    channel: str
    server_url: str
    data_dir: Path
    trusted_root: Path  # the root.json the device was provisioned with
    # the MQTT password; "" = the one `ota-agent enroll` kept in data_dir (agent.identity)
    broker_secret: str = ""
    broker_url: str = ""  # mqtt://host:port or mqtts://; empty = HTTP polling only
    broker_urls: tuple[str, ...] = ()  # the nodes of a broker cluster, instead of broker_url
    broker_ca: str = ""  # CA file for mqtts:// (the generated broker CA); default: system CAs
    metadata_url: str = ""  # default: <server_url>/tuf/metadata/
    targets_url: str = ""  # default: <server_url>/tuf/targets/
    poll_interval_s: float = 300.0
    poll_jitter: float = 0.2  # +/- share of the interval
    health_deadline_s: float = 60.0
    health_retry_s: float = 1.0  # a service still starting after boot gets another look
    slot_backend: str = "sim"
    slot_options: dict[str, Any] = field(default_factory=dict)
    health_checks: list[dict[str, Any]] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)
    version_file: str = ""  # where the running system says its version, if journal is lost

    @property
    def brokers(self) -> list[str]:
        """Every broker URL the device may use (none: HTTP polling only)."""
        return list(self.broker_urls) or ([self.broker_url] if self.broker_url else [])

    @property
    def resolved_metadata_url(self) -> str:
        return _with_slash(self.metadata_url or f"{self.server_url.rstrip('/')}/tuf/metadata/")

    @property
    def resolved_targets_url(self) -> str:
        return _with_slash(self.targets_url or f"{self.server_url.rstrip('/')}/tuf/targets/")


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


# Written by `ota-agent join-preview` / `leave-preview` (agent.tester); wins over `channel`.
CHANNEL_OVERRIDE_FILE = "channel"

_REQUIRED = ("device_id", "model", "channel", "server_url", "data_dir", "trusted_root")
_OPTIONAL = (
    "broker_secret",  # default: the one `ota-agent enroll` kept in data_dir (agent.identity)
    "broker_secret_file",
    "broker_url",
    "broker_urls",
    "broker_ca",
    "metadata_url",
    "targets_url",
    "poll_interval_s",
    "poll_jitter",
    "version_file",
    "slot",
    "health",
    "policy",
)
_HEALTH_KEYS = ("deadline_s", "retry_interval_s", "check")
CONFIG_DOCS = "docs/agent.md#configuration"


def load_config(path: Path) -> AgentConfig:
    """Read and check the TOML file; a bad file raises ConfigError saying what is wrong."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    return config_from_dict(raw, base=path.parent)


def config_from_dict(raw: dict[str, Any], base: Path = Path()) -> AgentConfig:
    missing = [k for k in _REQUIRED if not raw.get(k)]
    if missing:
        raise ConfigError(f"config is missing: {', '.join(missing)} (see {CONFIG_DOCS})")
    slot = raw.get("slot", {})
    health = raw.get("health", {})
    if not isinstance(slot, dict) or not isinstance(health, dict):
        raise ConfigError("[slot] and [health] must be tables")
    _refuse_unknown(raw, (*_REQUIRED, *_OPTIONAL), "")
    _refuse_unknown(health, _HEALTH_KEYS, "[health] ")
    data_dir = base / str(raw["data_dir"])
    secret = str(raw.get("broker_secret", ""))
    if not secret and raw.get("broker_secret_file"):
        secret = _read_secret(base / str(raw["broker_secret_file"]))
    try:
        return AgentConfig(
            device_id=str(raw["device_id"]),
            model=str(raw["model"]),
            channel=channel_override(data_dir) or str(raw["channel"]),
            server_url=str(raw["server_url"]),
            data_dir=data_dir,
            trusted_root=base / str(raw["trusted_root"]),
            broker_secret=secret,
            broker_url=str(raw.get("broker_url", "")),
            broker_urls=_broker_urls(raw),
            broker_ca=str(base / str(raw["broker_ca"])) if raw.get("broker_ca") else "",
            metadata_url=str(raw.get("metadata_url", "")),
            targets_url=str(raw.get("targets_url", "")),
            poll_interval_s=float(raw.get("poll_interval_s", 300.0)),
            poll_jitter=float(raw.get("poll_jitter", 0.2)),
            health_deadline_s=float(health.get("deadline_s", 60.0)),
            health_retry_s=float(health.get("retry_interval_s", 1.0)),
            slot_backend=str(slot.get("backend", "sim")),
            slot_options=_slot_options(slot, base),
            health_checks=list(health.get("check", [])),
            policy=dict(raw.get("policy", {})),
            version_file=str(raw.get("version_file", "")),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config has a value of the wrong type: {exc}") from None


def _broker_urls(raw: dict[str, Any]) -> tuple[str, ...]:
    """`broker_urls`: a list of 1..MAX_BROKER_URLS URLs, each checked; not with `broker_url`."""
    urls = raw.get("broker_urls", [])
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise ConfigError("broker_urls must be a list of mqtt:// or mqtts:// URLs")
    if not urls:
        return ()
    if raw.get("broker_url"):
        raise ConfigError("give broker_url or broker_urls, not both")
    parse_broker_urls(urls)  # a bad one is a ConfigError naming it
    return tuple(urls)


def _slot_options(slot: dict[str, Any], base: Path) -> dict[str, Any]:
    """The [slot] table but `backend`; a relative `root` (the simulated device's folder) is
    relative to the config file, as every other path in it."""
    options = {k: v for k, v in slot.items() if k != "backend"}
    if isinstance(options.get("root"), str) and options["root"]:
        options["root"] = str(base / options["root"])
    return options


def channel_override(data_dir: Path) -> str:
    """The channel a beta tester joined or left to, or "" when the config's channel holds."""
    path = data_dir / CHANNEL_OVERRIDE_FILE
    try:
        channel = path.read_text().strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the channel override {path}: {exc}") from None
    try:
        channel_topic(channel, "model")
    except ProtocolError:
        raise ConfigError(f"the channel override {path} holds no valid channel") from None
    return channel


def current_channel(config: AgentConfig) -> str:
    """The channel the device follows now: a tester's joined channel, else the config's.
    Read on every call: `ota-agent join-preview` changes it under a running agent."""
    return channel_override(config.data_dir) or config.channel


def _refuse_unknown(table: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {where}key(s) in config: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))}; see {CONFIG_DOCS})"
        )


def _read_secret(path: Path) -> str:
    """The broker secret in `path`, or "" when there is none yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ConfigError(f"cannot read broker secret file {path}: {exc.strerror}") from None
