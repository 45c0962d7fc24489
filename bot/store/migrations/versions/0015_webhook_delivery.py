"""webhook_delivery: the inbox of verified Sentry webhooks (issue #15)

Revision ID: 0015
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("content_key", sa.String(length=64), nullable=False, unique=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("issue_id", sa.String(length=64), nullable=True),
        sa.Column("actor_type", sa.String(length=32), nullable=True),
        sa.Column("actor_id", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_webhook_delivery_issue_id", "webhook_delivery", ["issue_id"])
    op.create_index("ix_webhook_delivery_due", "webhook_delivery", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_delivery_due", table_name="webhook_delivery")
    op.drop_index("ix_webhook_delivery_issue_id", table_name="webhook_delivery")
    op.drop_table("webhook_delivery")
