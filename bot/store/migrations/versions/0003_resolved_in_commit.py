"""tracked_issue.resolved_in_commit: the fix commit Sentry accepted when the bot resolved

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tracked_issue") as batch_op:
        batch_op.add_column(sa.Column("resolved_in_commit", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tracked_issue") as batch_op:
        batch_op.drop_column("resolved_in_commit")
