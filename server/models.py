"""The server's tables as typed SQLAlchemy 2 models. Alembic migrations mirror them
(`server/migrations/`); a test checks that the two never drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements an INTEGER primary key; PostgreSQL gets a 64-bit one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Device(Base):
    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(128))
    # The device's own ed25519 public key (URL-safe base64); None after an admin reset, or
    # for a device enrolled before keys (docs/decisions/0017-device-identity.md).
    public_key: Mapped[str | None] = mapped_column(String(64))
    # An admin reset opened this id to a fresh enrollment with the enrollment token alone.
    enrollment_open: Mapped[bool] = mapped_column(Boolean, default=False)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The latest report (highest seq) decides these; duplicates and stragglers never do.
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(32), default="")
    current_version: Mapped[str] = mapped_column(String(128), default="")
    target_version: Mapped[str] = mapped_column(String(128), default="")
    slot: Mapped[str] = mapped_column(String(32), default="")
    reason: Mapped[str] = mapped_column(String(32), default="")
    last_report_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # mosquitto's `$7$` hash of the device's broker secret (the broker's password file, and
    # the embedded broker's login check); only the device ever saw the secret
    broker_password_hash: Mapped[str | None] = mapped_column(String(256))
    # The TUF timestamp the device last said it trusts (its polls' X-OTA-Trusted-Timestamp),
    # and when it said so; None from an agent too old to say (server.services.staleness)
    trusted_ts_version: Mapped[int | None] = mapped_column(BigInteger)
    trusted_ts_expires: Mapped[datetime | None] = mapped_column(UTCDateTime())
    trusted_ts_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("channel", "model", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    target_path: Mapped[str] = mapped_column(String(1024))
    length: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    notes: Mapped[str] = mapped_column(Text, default="")
    published_at: Mapped[datetime] = mapped_column(UTCDateTime())
    release_counter: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Rollout(Base):
    __tablename__ = "rollouts"

    rollout_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    release_id: Mapped[int] = mapped_column(BigId, ForeignKey("releases.id"), index=True)
    percentage: Mapped[float] = mapped_column(Float)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    ring: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("device_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.device_id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(32))
    current_version: Mapped[str] = mapped_column(String(128))
    target_version: Mapped[str] = mapped_column(String(128), default="")
    slot: Mapped[str] = mapped_column(String(32), default="")
    reason: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    device_at: Mapped[float] = mapped_column(Float, default=0.0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    via: Mapped[str] = mapped_column(String(8))


class DeviceCommand(Base):
    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_device_status", "device_id", "status"),)

    command_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.device_id"))
    kind: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# --- beta testers (F-codes, feedback, groups, votes; see docs/testers.md)


class FCode(Base):
    """A single-use invite code to a channel; only its sha256 is kept."""

    __tablename__ = "fcodes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    redeemed_by: Mapped[str | None] = mapped_column(String(128))


class FeedbackGroup(Base):
    """Reports about one problem with one build: tester texts alike, or agent failures with
    the same reason and failing check. `signature` names an agent group (unique per build)."""

    __tablename__ = "feedback_groups"
    __table_args__ = (UniqueConstraint("build", "signature"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    build: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "tester" | "agent"
    signature: Mapped[str] = mapped_column(String(256))
    title: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(64), default="")
    blocking: Mapped[bool] = mapped_column(Boolean, default=False)
    blocking_reason: Mapped[str] = mapped_column(Text, default="")
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())


class Feedback(Base):
    """One tester's (or device's) words about a build, with an optional log excerpt."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(BigId, ForeignKey("feedback_groups.id"), index=True)
    build: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(64), default="")
    device_id: Mapped[str | None] = mapped_column(String(128))
    author: Mapped[str] = mapped_column(String(160))  # "<role>:<subject>"
    logs: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FeedbackVote(Base):
    __tablename__ = "feedback_votes"
    __table_args__ = (UniqueConstraint("group_id", "voter"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(BigId, ForeignKey("feedback_groups.id"))
    voter: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- rollouts and the train (staged waves, gates, audit; see docs/rollouts.md)


class RolloutPlan(Base):
    """The staged part of a rollout: waves, state, gate configuration and the last verdict.
    A rollout without a plan is a plain percentage (as `POST /releases` makes)."""

    __tablename__ = "rollout_plans"

    rollout_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("rollouts.rollout_id"), primary_key=True
    )
    waves: Mapped[list[float]] = mapped_column(JSON)
    wave_index: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    gates: Mapped[dict[str, Any]] = mapped_column(JSON)
    windows: Mapped[list[str]] = mapped_column(JSON, default=list)
    rate_per_minute: Mapped[float] = mapped_column(Float, default=0.0)
    stuck_timeout_s: Mapped[float] = mapped_column(Float)
    wave_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    paused_reason: Mapped[str] = mapped_column(Text, default="")
    paused_gate: Mapped[str] = mapped_column(String(32), default="")
    last_numbers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RolloutAudit(Base):
    """Every change of a staged rollout, by hand or by the scheduler, with its reason."""

    __tablename__ = "rollout_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("rollouts.rollout_id"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Train(Base):
    """One build's weekly train: announce, internal, preview, stable."""

    __tablename__ = "trains"
    __table_args__ = (UniqueConstraint("version", "model"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    week_of: Mapped[str] = mapped_column(String(10))  # ISO date of any day in the build's week
    stage: Mapped[str] = mapped_column(String(16))
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- auth (roles and tokens; see server/auth.py)


class ApiToken(Base):
    """A bearer token for a person or a tester: only its sha256 is kept. A revoked row is
    never rewritten and its name never reused (the audit trail of who held what)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# --- device identity (keys, challenges, access tokens, enrollment tokens; services/identity)


class DeviceChallenge(Base):
    """A nonce handed out for one device id to sign; deleted when used, useless once expired."""

    __tablename__ = "device_challenges"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DeviceToken(Base):
    """A short-lived access token a device obtained by signing a challenge: only its sha256."""

    __tablename__ = "device_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), ForeignKey("devices.device_id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EnrollmentToken(Base):
    """An admin-made enrollment token, limited in uses, time, model and channel: its sha256."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str | None] = mapped_column(String(128))  # None: any model
    channel: Mapped[str | None] = mapped_column(String(128))  # None: any channel
    max_uses: Mapped[int | None] = mapped_column(Integer)  # None: unlimited until it expires
    uses: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeviceAudit(Base):
    """What happened to a device's identity: enrolled, re-enrolled, reset (and by whom)."""

    __tablename__ = "device_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
