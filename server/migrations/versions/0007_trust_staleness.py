"""trust staleness: the TUF timestamp each device last said it trusts

Devices send `X-OTA-Trusted-Timestamp` with their polls; the server keeps the version, the
expiry and when it heard them, to flag devices whose metadata lags the served repository
(docs/decisions/0023-object-store-staleness-outages.md). Nullable: older agents say nothing.

Revision ID: 0007_trust_staleness
Revises: 0006_device_identity
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_trust_staleness"
down_revision = "0006_device_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("trusted_ts_version", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("trusted_ts_expires", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("trusted_ts_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("trusted_ts_at")
        batch.drop_column("trusted_ts_expires")
        batch.drop_column("trusted_ts_version")
