"""A batch records the undo batch that took its rows out of the lake (`batches undo`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add batches.undone_by."""
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("undone_by", sa.String(128), nullable=True))


def downgrade() -> None:
    """Drop batches.undone_by."""
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("undone_by")
