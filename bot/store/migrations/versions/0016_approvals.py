"""approvals: run.approval_channel, approval_decision audit trail, request_nonce

Revision ID: 0016
Revises: 0012b
"""
import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0012b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("remediation_run") as batch_op:
        batch_op.add_column(sa.Column("approval_channel", sa.String(length=16), nullable=True))
    op.create_table(
        "approval_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("issue_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("reply_url", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_approval_decision_run_id", "approval_decision", ["run_id"])
    op.create_index("ix_approval_decision_issue_id", "approval_decision", ["issue_id"])
    op.create_index("ix_approval_decision_at", "approval_decision", ["at"])
    op.create_table(
        "request_nonce",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_request_nonce_expires_at", "request_nonce", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_request_nonce_expires_at", table_name="request_nonce")
    op.drop_table("request_nonce")
    op.drop_index("ix_approval_decision_at", table_name="approval_decision")
    op.drop_index("ix_approval_decision_issue_id", table_name="approval_decision")
    op.drop_index("ix_approval_decision_run_id", table_name="approval_decision")
    op.drop_table("approval_decision")
    with op.batch_alter_table("remediation_run") as batch_op:
        batch_op.drop_column("approval_channel")
