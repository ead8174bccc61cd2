"""Layer metrics lose `errors`, which no layer ever counted: a layer's rejections are its
`quarantined` count, and a layer that errs fails its batch.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Drop layer_metrics.errors."""
    with op.batch_alter_table("layer_metrics") as batch:
        batch.drop_column("errors")


def downgrade() -> None:
    """Add layer_metrics.errors back, as 0 for every layer."""
    with op.batch_alter_table("layer_metrics") as batch:
        batch.add_column(sa.Column("errors", sa.BigInteger(), nullable=False, server_default="0"))
