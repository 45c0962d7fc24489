"""Indexes that keep a cycle's cost proportional to what changed (issue #12)

- ix_tracked_issue_watch (state, playbook_id, quiet_since, last_seen): the quiet-hours
  check counts watched issues, finds moved clocks and due issues per playbook from the
  index alone.
- ix_tracked_issue_overdue (escalated_at, response_due_at, last_seen): overdue issues.
- ix_tracked_issue_horizon (project, first_seen): incident grouping's recent issues.
- ix_remediation_run_issue_started (issue_id, playbook_id, started_at) and
  ix_remediation_run_playbook_started (playbook_id, started_at, status): the guards'
  counts (hidden debt, cooldown, runs per hour) without loading run rows.

Revision ID: 0012
Revises: 0017
"""

from alembic import op

revision = "0012"
down_revision = "0017"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_tracked_issue_watch", "tracked_issue", ["state", "playbook_id", "quiet_since", "last_seen"]),
    ("ix_tracked_issue_overdue", "tracked_issue", ["escalated_at", "response_due_at", "last_seen"]),
    ("ix_tracked_issue_horizon", "tracked_issue", ["project", "first_seen"]),
    (
        "ix_remediation_run_issue_started",
        "remediation_run",
        ["issue_id", "playbook_id", "started_at"],
    ),
    (
        "ix_remediation_run_playbook_started",
        "remediation_run",
        ["playbook_id", "started_at", "status"],
    ),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
