"""quarantined_issue: malformed issues from Sentry, kept with the reason for a human

Revision ID: 0008
Revises: 0009
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantined_issue",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("issue_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("short_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw_escaped", sa.Text(), nullable=False),
        sa.Column("times", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(
        op.f("ix_quarantined_issue_last_seen_at"), "quarantined_issue", ["last_seen_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_quarantined_issue_last_seen_at"), table_name="quarantined_issue")
    op.drop_table("quarantined_issue")
