"""Engines, sessions and migrations: the same code on SQLite and PostgreSQL (psycopg 3).

SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` transactions, so the HTTP worker threads
and the MQTT thread queue up for the write lock instead of failing with "database is locked".
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x0F_F1DA  # PostgreSQL advisory lock: replicas starting together queue up
SQLITE_BUSY_TIMEOUT_S = 30.0
POOL_SIZE = 20
POOL_OVERFLOW = 30


def make_engine(db_url: str) -> Engine:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    # uvicorn runs sync routes on up to 40 threads (anyio's default), plus the MQTT storer and
    # the scheduler: a pool of 5 + 10 made requests beyond 15 open and close a connection each
    # (895 reconnects for 10,000 reports, issue 12); 20 kept + 30 overflow covers them all.
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_on_begin)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "memory":
            _switch_to_wal(cursor)
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """Switching a new database file to WAL needs it to itself, and SQLite answers "database
    is locked" at once rather than waiting when servers start together: retry briefly."""
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    """Alembic's configuration, pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_to_head(engine_or_url: Engine | str) -> None:
    """Run every migration up to head (idempotent: a database at head is left alone).

    Several servers may start at once on one database: on PostgreSQL they take turns under an
    advisory lock; on SQLite the `BEGIN IMMEDIATE` transaction serialises them."""
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")  # feature branches may add heads
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()
