"""token rate limits, and predictions listed by owner

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
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_limit", sa.String(length=30), nullable=True))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_owner_created_at", ["owner", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_owner_created_at")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("rate_limit")
