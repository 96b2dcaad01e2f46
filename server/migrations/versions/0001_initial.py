"""devices, releases, rollouts, reports, commands

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=False),
        _when("enrolled_at"),
        _when("last_seen", nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("current_version", sa.String(128), nullable=False),
        sa.Column("target_version", sa.String(128), nullable=False),
        sa.Column("slot", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        _when("last_report_at", nullable=True),
        sa.PrimaryKeyConstraint("device_id", name="pk_devices"),
        sa.UniqueConstraint("credential_hash", name="uq_devices_credential_hash"),
    )
    op.create_table(
        "releases",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("target_path", sa.String(1024), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        _when("published_at"),
        sa.Column("release_counter", sa.BigInteger(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_releases"),
        sa.UniqueConstraint("channel", "model", "version", name="uq_releases_channel"),
    )
    op.create_table(
        "rollouts",
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("release_id", BIG_ID, nullable=False),
        sa.Column("percentage", sa.Float(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("ring", sa.String(64), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(
            ["release_id"], ["releases.id"], name="fk_rollouts_release_id_releases"
        ),
        sa.PrimaryKeyConstraint("rollout_id", name="pk_rollouts"),
    )
    op.create_index("ix_rollouts_release_id", "rollouts", ["release_id"])
    op.create_table(
        "reports",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("current_version", sa.String(128), nullable=False),
        sa.Column("target_version", sa.String(128), nullable=False),
        sa.Column("slot", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("device_at", sa.Float(), nullable=False),
        _when("received_at"),
        sa.Column("via", sa.String(8), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name="fk_reports_device_id_devices"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("device_id", "seq", name="uq_reports_device_id"),
    )
    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _when("created_at"),
        _when("delivered_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name="fk_commands_device_id_devices"
        ),
        sa.PrimaryKeyConstraint("command_id", name="pk_commands"),
    )
    op.create_index("ix_commands_device_status", "commands", ["device_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_commands_device_status", table_name="commands")
    op.drop_table("commands")
    op.drop_table("reports")
    op.drop_index("ix_rollouts_release_id", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("releases")
    op.drop_table("devices")
