"""What a storm (:mod:`bot.pipeline.storm`) asks of its target transaction.

The savepoint every attempt runs under, the idle timeout that keeps the target's locks
from outliving a stalled store write, the transaction id recovery asks about, and the
runs' statements: sent together, and when the database refuses one without naming it,
again one run at a time to find it.
"""

from __future__ import annotations

from bot.actions.base import ActionSettings, Limits, SharesTransaction
from bot.actions.port import TargetConnection
from bot.errors import BotError, RunRefused
from bot.pipeline.ports import PlanOutcome
from bot.pipeline.storm_admit import StormItem
from bot.playbooks.models import Playbook

SAVEPOINT = "SAVEPOINT bot_storm"
UNDO = "ROLLBACK TO SAVEPOINT bot_storm"
RELEASE = "RELEASE SAVEPOINT bot_storm"
# The target's locks never outlive a stalled store write: an idle transaction ends.
IDLE_TIMEOUT = "SELECT set_config('idle_in_transaction_session_timeout', %(ms)s, true)"


def transaction_id(conn: TargetConnection) -> str | None:
    """The target transaction's id on PostgreSQL (recovery asks ``txid_status``)."""
    if conn.dialect.name != "postgresql":
        return None
    return str(conn.fetch_all("SELECT txid_current()::text AS xid")[0]["xid"])


def run_items(
    conn: TargetConnection,
    action: SharesTransaction,
    settings: ActionSettings,
    limits: Limits,
    items: list[StormItem],
) -> StormItem | None:
    """Run every item's statements (their first statements sent together); the item
    refused, if one was. A statement the database refuses names no item: the attempt is
    rolled back to the savepoint and run again one item at a time to find it."""
    try:
        done = action.run_each_in(conn, settings, [dict(i.match.params) for i in items], limits)
    except RunRefused as exc:
        return items[exc.index]
    except BotError:
        conn.execute(UNDO)
        # The rollback released the locks taken after the savepoint: what the memo
        # learned from the catalog may no longer hold. Learn it again.
        conn.memo.clear()
        for item in items:
            try:
                ((item.preview, item.outcome),) = action.run_each_in(
                    conn, settings, [dict(item.match.params)], limits
                )
            except BotError:
                return item
        return None
    for item, (preview, outcome) in zip(items, done, strict=True):
        item.preview, item.outcome = preview, outcome
    return None


def outcome_of(pb: Playbook, item: StormItem, status: str, note: str) -> PlanOutcome:
    return PlanOutcome(
        item.issue_id,
        item.short_id,
        pb.id,
        "auto",
        status,
        run_id=item.run_id,
        preview=item.preview,
        note=note,
        params=dict(item.match.params),
    )
