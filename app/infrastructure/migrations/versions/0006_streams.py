"""Streams: a topic micro-batch records its source positions, and each run of a stream its
state, heartbeat and last micro-batch's figures.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add batches.positions; create the streams table."""
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("positions", sa.JSON(), nullable=True))

    op.create_table(
        "streams",
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("lake", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.BigInteger(), nullable=False),
        sa.Column("trigger_seconds", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_batch_id", sa.String(128), nullable=True),
        sa.Column("micro_batches", sa.BigInteger(), nullable=False),
        sa.Column("readings", sa.BigInteger(), nullable=False),
        sa.Column("last_duration_seconds", sa.Float(), nullable=True),
        sa.Column("last_readings_per_second", sa.Float(), nullable=True),
        sa.Column("last_latency_seconds", sa.Float(), nullable=True),
        sa.Column("lag", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_streams")),
        sa.CheckConstraint("state IN ('running', 'stopped', 'failed')", name=op.f("ck_streams_state")),
    )
    op.create_index(op.f("ix_streams_source"), "streams", ["source", "started_at"])


def downgrade() -> None:
    """Drop the streams table and batches.positions."""
    op.drop_index(op.f("ix_streams_source"), table_name="streams")
    op.drop_table("streams")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("positions")
