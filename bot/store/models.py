"""The bot's own state: SQLModel tables (schema owned by Alembic migrations).

The unique keys are the idempotency guarantees: ``remediation_run.idempotency_key``
(a run is journaled once, before it executes) and ``outbox.dedupe_key`` (a
notification is enqueued once). Datetimes are stored timezone-aware; SQLite hands
them back naive, so readers go through :func:`bot.clock.ensure_utc`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from bot.json_types import JsonObject


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp stored as UTC on every backend.

    SQLite keeps no offset: without this, 14:30+02:00 would be read back as 14:30 UTC.
    Values are converted to UTC on the way in and come back aware (UTC) on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given for a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLModel's Field() is untyped so that a field's declared type wins; these helpers
# keep that contract.
def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(UtcDateTime(), nullable=nullable, index=index),
    )


def _json() -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class LifecycleState(StrEnum):
    NEW = "new"
    MATCHED = "matched"
    PLANNED = "planned"
    APPROVED = "approved"
    REMEDIATING = "remediating"
    REMEDIATED = "remediated"
    WATCHING = "watching"
    RESOLVED = "resolved"
    FAILED = "failed"
    ESCALATED = "escalated"
    REGRESSED = "regressed"


class RunStatus(StrEnum):
    SHADOW = "shadow"  # preview only, nothing executed
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    RUNNING = "running"  # journaled as intended; outcome unknown until finished
    SUCCEEDED = "succeeded"
    NOOP = "noop"  # ran, nothing needed changing
    FAILED = "failed"
    VERIFY_FAILED = "verify_failed"
    EXPIRED = "expired"
    DENIED = "denied"  # a human said no (Slack, console or CLI)
    INTERRUPTED = "interrupted"  # found RUNNING after a crash; needs a look
    BLOCKED = "blocked"  # a guardrail refused


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"


_MOVED = "quiet_since IS NULL OR last_seen > quiet_since"
_FIRING = "escalated_at IS NULL AND last_seen > response_due_at"
_AWAITING = "awaiting_event_since IS NOT NULL"


class TrackedIssue(SQLModel, table=True):
    __tablename__ = "tracked_issue"
    # Per-cycle queries read these instead of whole rows (migration 0012).
    __table_args__ = (
        Index("ix_tracked_issue_watch", "state", "playbook_id", "quiet_since", "last_seen"),
        Index("ix_tracked_issue_horizon", "project", "first_seen"),
        # Partial: only rows a quiet cycle must act on (migration 0012b).
        Index(
            "ix_tracked_issue_moved",
            "state",
            sqlite_where=text(_MOVED),
            postgresql_where=text(_MOVED),
        ),
        Index(
            "ix_tracked_issue_firing_overdue",
            "response_due_at",
            sqlite_where=text(_FIRING),
            postgresql_where=text(_FIRING),
        ),
        # Partial: issues waiting for their latest event (migration 0018).
        Index(
            "ix_tracked_issue_awaiting_event",
            "awaiting_event_since",
            "id",
            sqlite_where=text(_AWAITING),
            postgresql_where=text(_AWAITING),
        ),
    )

    id: str = Field(primary_key=True, max_length=64)  # Sentry issue id
    short_id: str = Field(index=True, max_length=128)
    title: str = Field(sa_column=Column(Text, nullable=False))
    culprit: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    permalink: str = Field(default="", max_length=2048)
    project: str = Field(default="", max_length=256, index=True)
    environment: str | None = Field(default=None, max_length=256)
    level: str = Field(default="error", max_length=32)
    status: str = Field(default="unresolved", max_length=32)
    substatus: str | None = Field(default=None, max_length=64)
    count: int = 0
    user_count: int = 0
    first_seen: datetime | None = _ts()
    last_seen: datetime | None = _ts(index=True)
    raw: JsonObject = _json()  # the issue JSON as last seen (incl. latest event)
    # triage
    severity: str | None = Field(default=None, max_length=16, index=True)
    category: str | None = Field(default=None, max_length=32)
    team: str | None = Field(default=None, max_length=128, index=True)
    response_due_at: datetime | None = _ts()
    triage: JsonObject = _json()
    incident_id: str | None = Field(default=None, max_length=64, index=True)
    # lifecycle
    state: str = Field(default=LifecycleState.NEW.value, max_length=32, index=True)
    playbook_id: str | None = Field(default=None, max_length=128)
    quiet_since: datetime | None = _ts()
    resolved_at: datetime | None = _ts()
    resolved_by_bot: bool = False
    resolved_in_commit: str | None = Field(default=None, max_length=64)
    escalated_at: datetime | None = _ts()
    requires_approval: bool = False  # set after a regression
    # Needs its latest event to be matched; not fetched yet (per-cycle budget). Oldest first.
    awaiting_event_since: datetime | None = _ts()
    created_at: datetime | None = _ts(nullable=False)
    updated_at: datetime | None = _ts(nullable=False)


class Transition(SQLModel, table=True):
    """One lifecycle transition with its reason: the issue's timeline."""

    __tablename__ = "transition"

    id: int | None = Field(default=None, primary_key=True)
    issue_id: str = Field(index=True, max_length=64)
    from_state: str | None = Field(default=None, max_length=32)
    to_state: str = Field(max_length=32)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime | None = _ts(nullable=False, index=True)


class RemediationRun(SQLModel, table=True):
    """The journal: one row per planned remediation, written before it executes."""

    __tablename__ = "remediation_run"
    # The guards count runs in SQL over these (migration 0012).
    __table_args__ = (
        Index("ix_remediation_run_issue_started", "issue_id", "playbook_id", "started_at"),
        Index("ix_remediation_run_playbook_started", "playbook_id", "started_at", "status"),
    )

    id: str = Field(primary_key=True, max_length=36)
    idempotency_key: str = Field(max_length=128, sa_column_kwargs={"unique": True})
    playbook_id: str = Field(index=True, max_length=128)
    issue_id: str = Field(index=True, max_length=64)
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=64)
    params: JsonObject = _json()
    mode: str = Field(max_length=16)
    status: str = Field(max_length=32, index=True)
    rows_affected: int | None = None
    preview: JsonObject = _json()
    before_image: JsonObject = _json()
    verify: JsonObject = _json()
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    approved_by: str | None = Field(default=None, max_length=128)
    # Where the approval (or denial) came from: "slack" | "console" | "cli".
    approval_channel: str | None = Field(default=None, max_length=16)
    created_at: datetime | None = _ts(nullable=False, index=True)
    expires_at: datetime | None = _ts()
    approved_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    # PostgreSQL targets: the target transaction's id, journaled before the action runs,
    # so recovery can ask whether an interrupted run committed (txid_status).
    target_xid: str | None = Field(default=None, max_length=32)


class FixLink(SQLModel, table=True):
    __tablename__ = "fix_link"
    __table_args__ = (UniqueConstraint("issue_id", "repo", "kind", "ref", name="uq_fix_link"),)

    id: int | None = Field(default=None, primary_key=True)
    issue_id: str = Field(index=True, max_length=64)
    repo: str = Field(max_length=256)
    kind: str = Field(max_length=16)  # "pr" | "commit"
    ref: str = Field(max_length=64)  # PR number or commit sha
    commit_sha: str | None = Field(default=None, max_length=64)
    pr_number: int | None = None
    url: str = Field(default="", max_length=2048)
    title: str = Field(default="", sa_column=Column(Text, nullable=False))
    merged: bool = False
    state: str | None = Field(default=None, max_length=16)  # open | closed | merged
    # GitHub comment ids are already past 2**31.
    comment_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    comment_body_hash: str | None = Field(default=None, max_length=64)
    found_at: datetime | None = _ts(nullable=False)


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)  # "slack" | "sentry_comment" | "github_comment"
    dedupe_key: str = Field(max_length=256, sa_column_kwargs={"unique": True})
    issue_id: str | None = Field(default=None, max_length=64, index=True)
    kind: str = Field(default="", max_length=32)
    payload: JsonObject = _json()
    status: str = Field(default=OutboxStatus.PENDING.value, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = _ts(nullable=False)
    sent_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime | None = _ts(nullable=False)


class PollWatermark(SQLModel, table=True):
    __tablename__ = "poll_watermark"

    source: str = Field(primary_key=True, max_length=256)
    last_seen: datetime | None = _ts()
    seen_ids_at_mark: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    updated_at: datetime | None = _ts(nullable=False)


class Lease(SQLModel, table=True):
    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=128)
    holder: str = Field(max_length=128)
    expires_at: datetime | None = _ts(nullable=False)
    acquired_at: datetime | None = _ts(nullable=False)


class PlaybookState(SQLModel, table=True):
    """Circuit breaker per playbook."""

    __tablename__ = "playbook_state"

    playbook_id: str = Field(primary_key=True, max_length=128)
    consecutive_failures: int = 0
    breaker_open_until: datetime | None = _ts()
    updated_at: datetime | None = _ts(nullable=False)


class Setting(SQLModel, table=True):
    """Operator switches kept in the store (e.g. the global pause)."""

    __tablename__ = "bot_setting"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime | None = _ts(nullable=False)


class Incident(SQLModel, table=True):
    """Related issues (same release / transaction / culprit, appearing together)."""

    __tablename__ = "incident"

    id: str = Field(primary_key=True, max_length=64)
    group_key: str = Field(max_length=512, index=True)
    title: str = Field(sa_column=Column(Text, nullable=False))
    severity: str | None = Field(default=None, max_length=16)
    opened_at: datetime | None = _ts(nullable=False)
    closed_at: datetime | None = _ts()


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # received, waiting for the leader
    DONE = "done"  # processed
    IGNORED = "ignored"  # nothing to do (echo, untracked issue, installation)
    FAILED = "failed"  # gave up after the last attempt; the poller stays the safety net


class WebhookDelivery(SQLModel, table=True):
    """The webhook inbox: a verified Sentry delivery, received by any replica, processed
    by the leader. ``content_key`` (resource, action, issue id, body hash) is unique, so a
    redelivery of the same content is recorded once and processed once."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    content_key: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    request_id: str | None = Field(default=None, max_length=64)
    resource: str = Field(max_length=32)
    action: str = Field(max_length=32)
    issue_id: str | None = Field(default=None, max_length=64, index=True)
    actor_type: str | None = Field(default=None, max_length=32)
    actor_id: str | None = Field(default=None, max_length=128)
    payload: JsonObject = _json()  # the verified envelope, parsed
    status: str = Field(default=DeliveryStatus.PENDING.value, max_length=16)
    attempts: int = 0
    result: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    received_at: datetime | None = _ts(nullable=False)
    claimed_until: datetime | None = _ts()
    processed_at: datetime | None = _ts()


class FlagRevert(SQLModel, table=True):
    """The revert of one ``set_flag`` run: journaled (``started_at``) before it touches the
    target, finished with its outcome after. One row per run, so a revert happens once."""

    __tablename__ = "flag_revert"

    run_id: str = Field(primary_key=True, max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    started_at: datetime | None = _ts(nullable=False)
    finished_at: datetime | None = _ts()
    # reverted | already_back | changed_by_someone_else | failed
    outcome: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = Field(default=1)


class ApprovalDecision(SQLModel, table=True):
    """The approval audit trail: every approve / deny attempt, by whom, when, from where.

    Refusals (an approver not on ``BOT_APPROVERS``, an expired or already handled run)
    are journaled too, so the report can say who tried what.
    """

    __tablename__ = "approval_decision"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, max_length=36)
    issue_id: str | None = Field(default=None, max_length=64, index=True)
    action: str = Field(max_length=16)  # "approve" | "deny"
    outcome: str = Field(max_length=32)  # ApprovalOutcome value
    actor: str = Field(max_length=128)
    channel: str = Field(max_length=16)  # "slack" | "console" | "cli"
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))
    # Slack's response_url for this click: where the outcome is posted once the run
    # has executed (by whichever replica leads). Only ever taken from a verified request.
    reply_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime | None = _ts(nullable=False, index=True)


class RequestNonce(SQLModel, table=True):
    """A signed request already honoured (e.g. a Slack signature): one use, shared by
    every replica through the store; rows are purged once past ``expires_at``."""

    __tablename__ = "request_nonce"

    key: str = Field(primary_key=True, max_length=128)
    expires_at: datetime | None = _ts(nullable=False, index=True)


class QuarantinedIssue(SQLModel, table=True):
    """An issue Sentry sent that the bot could not read (malformed), kept for a human.

    The poll tracks the rest of the page and moves on; ``sentry-bot status`` lists these
    with the reason. ``raw_escaped`` is the item as ASCII-only JSON, so hostile bytes
    (NUL, lone surrogates) are kept without breaking any database.
    """

    __tablename__ = "quarantined_issue"

    key: str = Field(primary_key=True, max_length=64)  # Sentry id, else a hash of the item
    source: str = Field(max_length=256)
    issue_id: str | None = Field(default=None, max_length=64)
    short_id: str | None = Field(default=None, max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    raw_escaped: str = Field(sa_column=Column(Text, nullable=False))
    times: int = 1
    first_seen_at: datetime | None = _ts(nullable=False)
    last_seen_at: datetime | None = _ts(nullable=False, index=True)
