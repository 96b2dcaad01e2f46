"""api_tokens: expires_at (every token ends) and last_used_at

Tokens issued before expiry existed get the default lifetime, counted from this upgrade.

Revision ID: 0005_token_expiry
Revises: 0004_api_tokens
Create Date: 2026-12-05
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0005_token_expiry"
down_revision = "0004_api_tokens"
branch_labels = None
depends_on = None

DEFAULT_LIFETIME = timedelta(days=90)  # server.auth.DEFAULT_TOKEN_LIFETIME when written


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    tokens = sa.table("api_tokens", sa.column("expires_at", sa.DateTime(timezone=True)))
    op.execute(tokens.update().values(expires_at=datetime.now(UTC) + DEFAULT_LIFETIME))
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:  # SQLite cannot drop a column in place
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
