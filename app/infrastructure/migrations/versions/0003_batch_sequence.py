"""Batches carry a commit sequence, their kind (ingest or replay), the batch a replay re-ran,
and the lake they wrote to.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add batches.sequence, kind, replay_of and lake."""
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("sequence", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="ingest"))
        batch.add_column(sa.Column("replay_of", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lake", sa.Text(), nullable=True))
        batch.create_index(op.f("ix_batches_sequence"), ["sequence"], unique=True)


def downgrade() -> None:
    """Drop batches.sequence, kind, replay_of and lake."""
    with op.batch_alter_table("batches") as batch:
        batch.drop_index(op.f("ix_batches_sequence"))
        batch.drop_column("lake")
        batch.drop_column("replay_of")
        batch.drop_column("kind")
        batch.drop_column("sequence")
