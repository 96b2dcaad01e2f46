"""staged rollouts and the weekly train: rollout_plans, rollout_audit, trains

Revision ID: 0002_rollouts
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_rollouts"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "rollout_plans",
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("waves", sa.JSON(), nullable=False),
        sa.Column("wave_index", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("gates", sa.JSON(), nullable=False),
        sa.Column("windows", sa.JSON(), nullable=False),
        sa.Column("rate_per_minute", sa.Float(), nullable=False),
        sa.Column("stuck_timeout_s", sa.Float(), nullable=False),
        _when("wave_started_at"),
        sa.Column("paused_reason", sa.Text(), nullable=False),
        sa.Column("paused_gate", sa.String(32), nullable=False),
        sa.Column("last_numbers", sa.JSON(), nullable=False),
        _when("updated_at"),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.rollout_id"],
            name="fk_rollout_plans_rollout_id_rollouts",
        ),
        sa.PrimaryKeyConstraint("rollout_id", name="pk_rollout_plans"),
    )
    op.create_table(
        "rollout_audit",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("rollout_id", sa.String(32), nullable=False),
        _when("at"),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.rollout_id"],
            name="fk_rollout_audit_rollout_id_rollouts",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rollout_audit"),
    )
    op.create_index("ix_rollout_audit_rollout_id", "rollout_audit", ["rollout_id"])
    op.create_table(
        "trains",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("week_of", sa.String(10), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_trains"),
        sa.UniqueConstraint("version", "model", name="uq_trains_version"),
    )


def downgrade() -> None:
    op.drop_table("trains")
    op.drop_index("ix_rollout_audit_rollout_id", table_name="rollout_audit")
    op.drop_table("rollout_audit")
    op.drop_table("rollout_plans")
