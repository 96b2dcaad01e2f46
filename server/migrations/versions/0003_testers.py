"""beta testers: fcodes, feedback_groups, feedback, feedback_votes

Revision ID: 0003_testers
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_testers"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "fcodes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("redeemed_at", nullable=True),
        sa.Column("redeemed_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_fcodes"),
        sa.UniqueConstraint("code_hash", name="uq_fcodes_code_hash"),
    )
    op.create_table(
        "feedback_groups",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("build", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("signature", sa.String(256), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("blocking", sa.Boolean(), nullable=False),
        sa.Column("blocking_reason", sa.Text(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        _when("created_at"),
        _when("last_seen"),
        sa.PrimaryKeyConstraint("id", name="pk_feedback_groups"),
        sa.UniqueConstraint("build", "signature", name="uq_feedback_groups_build"),
    )
    op.create_index("ix_feedback_groups_build", "feedback_groups", ["build"])
    op.create_table(
        "feedback",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("group_id", BIG_ID, nullable=False),
        sa.Column("build", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("author", sa.String(160), nullable=False),
        sa.Column("logs", sa.Text(), nullable=True),
        _when("created_at"),
        sa.ForeignKeyConstraint(
            ["group_id"], ["feedback_groups.id"], name="fk_feedback_group_id_feedback_groups"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_group_id", "feedback", ["group_id"])
    op.create_table(
        "feedback_votes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("group_id", BIG_ID, nullable=False),
        sa.Column("voter", sa.String(160), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(
            ["group_id"], ["feedback_groups.id"], name="fk_feedback_votes_group_id_feedback_groups"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feedback_votes"),
        sa.UniqueConstraint("group_id", "voter", name="uq_feedback_votes_group_id"),
    )


def downgrade() -> None:
    op.drop_table("feedback_votes")
    op.drop_index("ix_feedback_group_id", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_feedback_groups_build", table_name="feedback_groups")
    op.drop_table("feedback_groups")
    op.drop_table("fcodes")
