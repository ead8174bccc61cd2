"""Batches, their input files, per-layer metrics and rule counts.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RECONCILIATION_COLUMNS = (
    "rows_read",
    "rows_accepted",
    "rows_quarantined",
    "duplicates_replaced",
    "silver_inserted",
    "silver_updated",
    "silver_unchanged",
)


def upgrade() -> None:
    """Create the batch tables."""
    # op.f marks names as final so the store's naming convention does not prefix them again.
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("execution_mode", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ingestion_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record_count", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in _RECONCILIATION_COLUMNS),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batches")),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'skipped')",
            name=op.f("ck_batches_status"),
        ),
    )
    op.create_index(op.f("ix_batches_started_at"), "batches", ["started_at"])

    op.create_table(
        "batch_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(128), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("record_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_files")),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.batch_id"], name=op.f("fk_batch_files_batch_id_batches")
        ),
    )
    op.create_index(op.f("ix_batch_files_sha256"), "batch_files", ["sha256"])
    op.create_index(op.f("ix_batch_files_batch_id"), "batch_files", ["batch_id"])

    op.create_table(
        "layer_metrics",
        sa.Column("batch_id", sa.String(128), nullable=False),
        sa.Column("layer", sa.String(16), nullable=False),
        sa.Column("records_in", sa.BigInteger(), nullable=False),
        sa.Column("records_out", sa.BigInteger(), nullable=False),
        sa.Column("quarantined", sa.BigInteger(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "layer", name=op.f("pk_layer_metrics")),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.batch_id"], name=op.f("fk_layer_metrics_batch_id_batches")
        ),
        sa.CheckConstraint(
            "layer IN ('bronze', 'silver', 'gold')", name=op.f("ck_layer_metrics_layer")
        ),
    )

    op.create_table(
        "rule_counts",
        sa.Column("batch_id", sa.String(128), nullable=False),
        sa.Column("rule", sa.String(255), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "rule", name=op.f("pk_rule_counts")),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.batch_id"], name=op.f("fk_rule_counts_batch_id_batches")
        ),
    )


def downgrade() -> None:
    """Drop the batch tables, children first."""
    op.drop_table("rule_counts")
    op.drop_table("layer_metrics")
    op.drop_index(op.f("ix_batch_files_batch_id"), table_name="batch_files")
    op.drop_index(op.f("ix_batch_files_sha256"), table_name="batch_files")
    op.drop_table("batch_files")
    op.drop_index(op.f("ix_batches_started_at"), table_name="batches")
    op.drop_table("batches")
