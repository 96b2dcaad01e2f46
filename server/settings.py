"""The server's settings: one dataclass, read from OTA_* environment variables on request.

Nothing is read at import time; `create_app(Settings(...))` takes whatever the caller built.
An empty admin or enrollment token switches that API off (403 with a message saying so),
so a server started without configuration never accepts an unauthenticated release.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from server.services.train import TrainConfig

DEFAULT_DB_URL = "sqlite:///ota-server.db"


@dataclass(frozen=True)
class RateLimitConfig:
    """Limits against abuse (server.rate_limits), each "<count>/<second|minute|hour|day>",
    counted per server process; from OTA_RATE_<FIELD> (e.g. OTA_RATE_ENROLL_PER_ADDRESS)."""

    enroll_per_address: str = "60/minute"
    enroll_per_device: str = "10/minute"
    redeem_per_address: str = "30/minute"
    redeem_per_device: str = "10/minute"
    auth_failures_per_address: str = "20/minute"
    auth_failures_per_device: str = "10/minute"

    @classmethod
    def all_at(cls, limit: str) -> RateLimitConfig:
        """Every limit the same, e.g. a high one for a lab whose whole fleet is on loopback."""
        return cls(**dict.fromkeys(asdict(cls()), limit))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RateLimitConfig:
        given = {name: env.get(f"OTA_RATE_{name.upper()}") for name in asdict(cls())}
        return cls(**{name: text for name, text in given.items() if text})


@dataclass(frozen=True)
class Settings:
    db_url: str = DEFAULT_DB_URL
    repo_dir: Path | None = None  # TUF repository root: metadata/ and targets/, served at /tuf/
    broker_url: str | None = None  # mqtt[s]://[user:password@]host:port, or None: HTTP only
    broker_ca: Path | None = None  # CA file for mqtts:// (e.g. server.mosquitto's); None: system
    admin_token: str = ""  # "" = admin API off
    enrollment_token: str = ""  # the fleet-wide one; "" = only admin-made enrollment tokens
    challenge_ttl_s: float = 60.0  # a device's challenge nonce is worthless after this
    device_token_ttl_s: float = 3600.0  # a device's access token (bought with a signature)
    report_timeout_s: float = 3600.0  # a device silent for longer is shown as silent
    # a device whose trusted TUF timestamp lags the served one by more is stale
    stale_metadata_after_s: float = 4 * 3600.0
    mqtt_client_id: str = "ota-server"  # fixed: the broker keeps our session (QoS 1 backlog)
    mqtt_connect_wait_s: float = 5.0  # how long startup waits for the first MQTT connection
    # set by `ota server run --workers N>1`: each worker subscribes to the status topics as
    # `$share/<group>/...` under its own client id, so the broker gives each report to one
    mqtt_share_group: str | None = None
    max_reports_per_batch: int = 1000
    max_body_bytes: int = 4 * 1024 * 1024  # larger request bodies are refused (413)
    online_keys_dir: Path | None = None  # timestamp + snapshot keys only; None: no re-signing
    online_renew_s: float = 3600.0  # how often they are re-signed (timestamp lives a day)
    rollout_tick_s: float = 30.0  # how often the scheduler evaluates rollouts and trains; 0: off
    train: TrainConfig = field(default_factory=TrainConfig)  # schedule, waves, gates
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)  # 429 past these
    web_session_key: str = ""  # signs dashboard cookies; "" = a random key per process
    # Images from an object store, not from this server (server.services.target_links): a
    # CDN / public-read base URL of the repository's targets/, or an s3://bucket/prefix whose
    # targets/ devices get presigned GETs for (valid targets_url_ttl_s; credentials: boto3's
    # usual environment, on the server only). Both empty: images come from repo_dir.
    targets_public_url: str = ""
    targets_store: str = ""
    targets_url_ttl_s: float = 900.0
    s3_endpoint_url: str = ""  # a non-AWS S3 (MinIO, moto); "" = AWS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        repo = env.get("OTA_REPO_DIR")
        broker_ca = env.get("OTA_BROKER_CA")
        defaults = cls()
        return cls(
            db_url=env.get("OTA_DB_URL") or DEFAULT_DB_URL,
            repo_dir=Path(repo) if repo else None,
            broker_url=env.get("OTA_BROKER_URL") or None,
            broker_ca=Path(broker_ca) if broker_ca else None,
            admin_token=env.get("OTA_ADMIN_TOKEN", ""),
            enrollment_token=env.get("OTA_ENROLLMENT_TOKEN", ""),
            challenge_ttl_s=float(env.get("OTA_CHALLENGE_TTL_S", defaults.challenge_ttl_s)),
            device_token_ttl_s=float(
                env.get("OTA_DEVICE_TOKEN_TTL_S", defaults.device_token_ttl_s)
            ),
            report_timeout_s=float(env.get("OTA_REPORT_TIMEOUT_S", defaults.report_timeout_s)),
            stale_metadata_after_s=float(
                env.get("OTA_STALE_METADATA_AFTER_S", defaults.stale_metadata_after_s)
            ),
            mqtt_client_id=env.get("OTA_MQTT_CLIENT_ID") or defaults.mqtt_client_id,
            mqtt_connect_wait_s=float(
                env.get("OTA_MQTT_CONNECT_WAIT_S", defaults.mqtt_connect_wait_s)
            ),
            max_reports_per_batch=int(
                env.get("OTA_MAX_REPORTS_PER_BATCH", defaults.max_reports_per_batch)
            ),
            max_body_bytes=int(env.get("OTA_MAX_BODY_BYTES", defaults.max_body_bytes)),
            rollout_tick_s=float(env.get("OTA_ROLLOUT_TICK_S", defaults.rollout_tick_s)),
            online_keys_dir=Path(keys) if (keys := env.get("OTA_ONLINE_KEYS_DIR")) else None,
            online_renew_s=float(env.get("OTA_ONLINE_RENEW_S", defaults.online_renew_s)),
            rate_limits=RateLimitConfig.from_env(env),
            web_session_key=env.get("OTA_WEB_SESSION_KEY", ""),
            targets_public_url=env.get("OTA_TARGETS_PUBLIC_URL", ""),
            targets_store=env.get("OTA_TARGETS_STORE", ""),
            targets_url_ttl_s=float(env.get("OTA_TARGETS_URL_TTL_S", defaults.targets_url_ttl_s)),
            s3_endpoint_url=env.get("OTA_S3_ENDPOINT_URL", ""),
        )


def server_broker_user(settings: Settings) -> str:
    """The server's own broker login (from `broker_url`), which no device id may take."""
    from urllib.parse import unquote, urlparse

    username = urlparse(settings.broker_url or "").username
    return unquote(username) if username else ""
