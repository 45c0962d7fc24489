"""Partial index on the issues waiting for their latest event (issue #12)

``ix_tracked_issue_awaiting_event (awaiting_event_since, id) WHERE awaiting_event_since
IS NOT NULL``: every cycle counts the issues still waiting for their event and picks the
oldest ones to fetch (bot/pipeline/cycle.py). Without it both queries scanned every
tracked issue: 3.6 ms each at 10,000 issues on SQLite, half the SQL time of a cycle
that changes nothing. The index holds only the waiting rows, so those queries cost
what is waiting, not what is tracked. The WHERE text must match the queries' term for
SQLite's planner to pick it.

Revision ID: 0018
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0008"
branch_labels = None
depends_on = None

AWAITING = "awaiting_event_since IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_tracked_issue_awaiting_event",
        "tracked_issue",
        ["awaiting_event_since", "id"],
        sqlite_where=sa.text(AWAITING),
        postgresql_where=sa.text(AWAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_tracked_issue_awaiting_event", table_name="tracked_issue")
