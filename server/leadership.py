"""Which server replica does the work that must happen once: the rollout scheduler and the
weekly train (each step publishes notices), and re-signing the online roles.

On PostgreSQL the leader is the replica holding a session advisory lock on a connection of
its own, kept open while it leads. When the leader dies, even by SIGKILL, its socket closes,
PostgreSQL ends the session and the lock is free: the next replica to ask takes it, on its
next tick. Every tick the leader first checks that its session is alive, and steps down if
not. On SQLite there is one server process, which leads (docs/decisions/0022).

The steps under the lock stay idempotent transactions that re-read the state, so a leader
that has lost its session without knowing it yet (a network cut, until TCP keepalives end
it) does no harm but a repeated publish of the same retained notice.
"""

from __future__ import annotations

import logging
import threading
from typing import Final, Protocol

from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

LEADER_LOCK_KEY: Final = 0x0F_F1DA_1EAD  # another key than db.MIGRATION_LOCK_KEY
CHECK_TIMEOUT_S: Final = 5  # connect and statement timeout of the leadership connection


class Leadership(Protocol):
    """Asked before each tick of once-only work; thread-safe."""

    def leads(self) -> bool: ...

    def close(self) -> None: ...


class SoleLeader:
    """One server process (SQLite): it always leads."""

    def leads(self) -> bool:
        return True

    def close(self) -> None:
        return None


class AdvisoryLockLeader:
    """The replica holding `pg_try_advisory_lock(key)` on its own connection leads."""

    def __init__(self, db_url: str, key: int = LEADER_LOCK_KEY) -> None:
        self._engine: Engine = create_engine(
            db_url,
            poolclass=NullPool,  # one connection, held; never shared with request handlers
            isolation_level="AUTOCOMMIT",  # never idle in a transaction while leading
            connect_args={
                "connect_timeout": CHECK_TIMEOUT_S,
                "options": f"-c statement_timeout={CHECK_TIMEOUT_S * 1000}",
                "keepalives_idle": 10,  # a vanished peer ends the session in ~40 s
                "keepalives_interval": 10,
                "keepalives_count": 3,
            },
        )
        self._key = key
        self._conn: Connection | None = None
        self._leading = False
        self._lock = threading.Lock()

    def leads(self) -> bool:
        with self._lock:
            try:
                return self._check()
            except SQLAlchemyError as exc:
                if self._leading:
                    log.warning("lost the leadership connection (%s); stepping down", exc)
                self._drop()
                return False

    def _check(self) -> bool:
        if self._conn is None:
            self._conn = self._engine.connect()
        if self._leading:
            self._conn.execute(text("SELECT 1"))  # the session lives: the lock is still ours
            return True
        got = self._conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key})
        self._leading = bool(got.scalar())
        if self._leading:
            log.info("this replica now leads the once-only work (rollouts, train, re-signing)")
        return self._leading

    def _drop(self) -> None:
        self._leading = False
        if self._conn is not None:
            try:
                self._conn.close()
            except SQLAlchemyError:
                log.debug("closing a broken leadership connection failed", exc_info=True)
            self._conn = None

    def close(self) -> None:
        """Step down: unlock (at once; a closed session's lock goes a moment later), close."""
        with self._lock:
            if self._leading and self._conn is not None:
                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                except SQLAlchemyError:
                    log.debug("unlocking failed; the session's end frees it", exc_info=True)
            self._drop()
        self._engine.dispose()


def leadership_for(db_url: str) -> Leadership:
    """An advisory lock on PostgreSQL; on SQLite (one process) this process leads."""
    if make_url(db_url).get_backend_name() == "postgresql":
        return AdvisoryLockLeader(db_url)
    return SoleLeader()
