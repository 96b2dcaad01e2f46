"""Alembic environment: runs on the connection `server.db.upgrade_to_head` hands over, or
(for the alembic command line) on OTA_DB_URL / sqlalchemy.url. Never touches logging."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from server.db import make_engine
from server.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("OTA_DB_URL")
    if not url:
        raise SystemExit("set OTA_DB_URL or sqlalchemy.url to run migrations")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")
run_migrations_online()
