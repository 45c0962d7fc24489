"""Crash safety (issue #9): the target transaction id of a run, and issues waiting for
their latest event.

``remediation_run.target_xid``: the PostgreSQL transaction id of the run's target
transaction, journaled before the action runs, so recovery can ask the target whether
an interrupted run committed (``txid_status``) instead of guessing.
``tracked_issue.awaiting_event_since``: set while an issue needs its latest event to be
matched and the per-cycle fetch budget has not reached it yet (fetched oldest first).

Revision ID: 0009
Revises: 0016
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("remediation_run") as batch_op:
        batch_op.add_column(sa.Column("target_xid", sa.String(length=32), nullable=True))
    with op.batch_alter_table("tracked_issue") as batch_op:
        batch_op.add_column(
            sa.Column("awaiting_event_since", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("tracked_issue") as batch_op:
        batch_op.drop_column("awaiting_event_since")
    with op.batch_alter_table("remediation_run") as batch_op:
        batch_op.drop_column("target_xid")
