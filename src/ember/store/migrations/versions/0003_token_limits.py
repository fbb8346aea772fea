"""token rate limits, predictions listed by owner, per-account setting keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("settings", schema=None) as batch_op:
        batch_op.alter_column(
            "key", existing_type=sa.String(length=100), type_=sa.String(length=200)
        )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_limit", sa.String(length=30), nullable=True))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_owner_created_at", ["owner", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_owner_created_at")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("rate_limit")
    with op.batch_alter_table("settings", schema=None) as batch_op:
        batch_op.alter_column(
            "key", existing_type=sa.String(length=200), type_=sa.String(length=100)
        )
