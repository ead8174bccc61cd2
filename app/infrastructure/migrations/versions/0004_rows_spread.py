"""Reconciliation counts the rows added by booking a register span on each of its intervals.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add batches.rows_spread."""
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("rows_spread", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop batches.rows_spread."""
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("rows_spread")
