"""Partial indexes holding only the rows a quiet cycle must look at (issue #12)

- ix_tracked_issue_moved (state) WHERE quiet_since IS NULL OR last_seen > quiet_since:
  watched issues whose quiet clock must start or restart (a new event: a change).
- ix_tracked_issue_firing_overdue (response_due_at) WHERE escalated_at IS NULL AND
  last_seen > response_due_at: not escalated and still firing after the deadline.

ix_tracked_issue_overdue (0012) is dropped: it holds every past-deadline issue, and
SQLite's planner preferred it to the partial one.

Both stay small whatever the number of tracked issues, so the lifecycle and overdue
queries cost what changed instead of scanning every watched or past-deadline issue.
The WHERE texts must match the queries' terms (bot/pipeline/lifecycle_due.py,
bot/pipeline/triage.py) for SQLite's planner to pick them.

Revision ID: 0012b
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0012b"
down_revision = "0012"
branch_labels = None
depends_on = None

MOVED = "quiet_since IS NULL OR last_seen > quiet_since"
FIRING = "escalated_at IS NULL AND last_seen > response_due_at"


def upgrade() -> None:
    op.drop_index("ix_tracked_issue_overdue", table_name="tracked_issue")
    op.create_index(
        "ix_tracked_issue_moved",
        "tracked_issue",
        ["state"],
        sqlite_where=sa.text(MOVED),
        postgresql_where=sa.text(MOVED),
    )
    op.create_index(
        "ix_tracked_issue_firing_overdue",
        "tracked_issue",
        ["response_due_at"],
        sqlite_where=sa.text(FIRING),
        postgresql_where=sa.text(FIRING),
    )


def downgrade() -> None:
    op.drop_index("ix_tracked_issue_firing_overdue", table_name="tracked_issue")
    op.drop_index("ix_tracked_issue_moved", table_name="tracked_issue")
    op.create_index(
        "ix_tracked_issue_overdue",
        "tracked_issue",
        ["escalated_at", "response_due_at", "last_seen"],
    )
