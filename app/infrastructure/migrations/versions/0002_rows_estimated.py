"""Reconciliation counts the silver rows that estimation added.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add batches.rows_estimated."""
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("rows_estimated", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop batches.rows_estimated."""
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("rows_estimated")
