"""cost ledger: replica usage, budgets, and the token that created each prediction

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replica_usage",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("deployment", sa.String(length=201), nullable=False),
        sa.Column("hardware", sa.String(length=50), nullable=False),
        sa.Column("tier", sa.String(length=20), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("starting_seconds", sa.Float(), nullable=False),
        sa.Column("busy_seconds", sa.Float(), nullable=False),
        sa.Column("idle_seconds", sa.Float(), nullable=False),
        sa.Column("draining_seconds", sa.Float(), nullable=False),
        sa.Column("attributed_start_cost", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("replica_usage", schema=None) as batch_op:
        batch_op.create_index("ix_replica_usage_requested_at", ["requested_at"], unique=False)
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_id", sa.String(length=40), nullable=True))
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=201), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("limit_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("budgets")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("token_id")
    op.drop_table("replica_usage")
