"""Audit: one row per mutating action (a run, a replay, a stream's start and stop, optimize,
vacuum), with when, who, what, on what, and how it ended.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-19
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the audit table."""
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
        sa.CheckConstraint("outcome IN ('succeeded', 'failed', 'refused')", name=op.f("ck_audit_outcome")),
        sa.CheckConstraint("actor_kind IN ('cli', 'api', 'stream', 'service')", name=op.f("ck_audit_actor_kind")),
    )
    op.create_index(op.f("ix_audit_at"), "audit", ["at"])
    op.create_index(op.f("ix_audit_action"), "audit", ["action", "at"])
    op.create_index(op.f("ix_audit_actor"), "audit", ["actor", "at"])


def downgrade() -> None:
    """Drop the audit table."""
    op.drop_index(op.f("ix_audit_actor"), table_name="audit")
    op.drop_index(op.f("ix_audit_action"), table_name="audit")
    op.drop_index(op.f("ix_audit_at"), table_name="audit")
    op.drop_table("audit")
