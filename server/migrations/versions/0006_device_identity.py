"""device identity: keys, challenges, access tokens, enrollment tokens, the device audit

Devices prove themselves with their own ed25519 key from now on: the shared bearer
credential (`devices.credential_hash`) goes. A device enrolled before keys has none and
needs an admin reset to enroll again (docs/decisions/0017-device-identity.md).

Revision ID: 0006_device_identity
Revises: 0005_token_expiry
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_device_identity"
down_revision = "0005_token_expiry"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:  # SQLite cannot drop a column in place
        batch.add_column(sa.Column("public_key", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("enrollment_open", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.drop_constraint("uq_devices_credential_hash", type_="unique")
        batch.drop_column("credential_hash")
    _create_challenges_and_tokens()
    _create_enrollment_tokens_and_audit()


def _create_challenges_and_tokens() -> None:
    op.create_table(
        "device_challenges",
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        _when("expires_at"),
        sa.PrimaryKeyConstraint("nonce", name="pk_device_challenges"),
    )
    op.create_index("ix_device_challenges_device_id", "device_challenges", ["device_id"])
    op.create_index("ix_device_challenges_expires_at", "device_challenges", ["expires_at"])
    op.create_table(
        "device_tokens",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        sa.PrimaryKeyConstraint("id", name="pk_device_tokens"),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name="fk_device_tokens_device_id_devices"
        ),
        sa.UniqueConstraint("token_hash", name="uq_device_tokens_token_hash"),
    )
    op.create_index("ix_device_tokens_device_id", "device_tokens", ["device_id"])


def _create_enrollment_tokens_and_audit() -> None:
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("channel", sa.String(128), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(160), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_tokens"),
        sa.UniqueConstraint("name", name="uq_enrollment_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_enrollment_tokens_token_hash"),
    )
    op.create_table(
        "device_audit",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        _when("at"),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_device_audit"),
    )
    op.create_index("ix_device_audit_device_id", "device_audit", ["device_id"])


def downgrade() -> None:
    op.drop_table("device_audit")
    op.drop_table("enrollment_tokens")
    op.drop_table("device_tokens")
    op.drop_table("device_challenges")
    with op.batch_alter_table("devices") as batch:
        # keys cannot become the old bearer credentials: every device enrolls again
        batch.add_column(sa.Column("credential_hash", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_devices_credential_hash", ["credential_hash"])
        batch.drop_column("enrollment_open")
        batch.drop_column("public_key")
