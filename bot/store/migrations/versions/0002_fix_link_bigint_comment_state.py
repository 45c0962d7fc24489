"""fix_link.comment_id as BIGINT (GitHub ids exceed 2**31) and a PR state column

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fix_link") as batch_op:
        batch_op.alter_column(
            "comment_id", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True
        )
        batch_op.add_column(sa.Column("state", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fix_link") as batch_op:
        batch_op.drop_column("state")
        batch_op.alter_column(
            "comment_id", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True
        )
