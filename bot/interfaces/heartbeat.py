"""Heartbeats: each replica records when its jobs last ran; ``health`` reads them.

After each job the replica upserts one ``bot_setting`` row (key ``heartbeat:<instance>``)
holding the outcome of that job and the last outcome of **every** job;
:func:`health_status` answers the container healthcheck from the newest one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NotRequired  # pydantic needs this one on 3.11

from pydantic import TypeAdapter, ValidationError
from sqlmodel import col, select
from typing_extensions import TypedDict

from bot.clock import Clock
from bot.errors import BotError
from bot.store.db import Store
from bot.store.models import Setting

HEARTBEAT_PREFIX = "heartbeat:"
_KEY_MAX = 64  # bot_setting.key width


@dataclass(frozen=True)
class JobResult:
    name: str
    ran: bool  # the step was executed (we were the leader)
    leader: bool
    summary: str = ""
    error: str | None = None


class JobOutcome(TypedDict):
    """The last run of one job, as stored in a heartbeat's ``jobs``."""

    at: str
    leader: bool
    ran: bool
    ok: bool
    summary: str


class Beat(TypedDict):
    """A parsed heartbeat: the job that ran last, and the last run of every job."""

    at: datetime
    leader: bool
    ran: bool
    ok: bool
    summary: str
    instance: str
    job: str
    jobs: NotRequired[dict[str, JobOutcome]]


_BEAT = TypeAdapter(Beat)


def heartbeat_key(instance: str) -> str:
    """``heartbeat:<instance>``, hashed when the instance id is too long for the column."""
    key = HEARTBEAT_PREFIX + instance
    if len(key) > _KEY_MAX:
        key = HEARTBEAT_PREFIX + hashlib.sha256(instance.encode()).hexdigest()[:40]
    return key


def write_heartbeat(store: Store, instance: str, clock: Clock, result: JobResult) -> None:
    """Upsert this instance's heartbeat row: the time and outcome of the job that just
    ran, plus the last run of **every** job (``jobs``), so a reader asking "has ``poll``
    run?" is not answered by whichever job happened to beat last."""
    now = clock.now()
    outcome: JobOutcome = {
        "at": now.isoformat(),
        "leader": result.leader,
        "ran": result.ran,
        "ok": result.error is None,
        "summary": (result.error or result.summary)[:300],
    }
    key = heartbeat_key(instance)
    with store.session() as session:
        row = session.get(Setting, key)
        previous = _parse_beat(row.value) if row is not None else None
        jobs = dict(previous.get("jobs", {})) if previous else {}
        jobs[result.name] = outcome
        value = json.dumps(
            {**outcome, "instance": instance, "job": result.name, "jobs": jobs},
            default=str,
        )
        if row is None:
            row = Setting(key=key, value=value, updated_at=now)
        row.value, row.updated_at = value, now
        session.add(row)


def read_heartbeat(store: Store, instance: str) -> Beat | None:
    """The parsed heartbeat of ``instance`` (``at`` a datetime; ``jobs`` maps each job
    name to its last outcome), or None when it has not beaten yet."""
    with store.session() as session:
        row = session.get(Setting, heartbeat_key(instance))
        return _parse_beat(row.value) if row is not None else None


def health_status(
    store: Store, clock: Clock, max_age: timedelta, *, instance: str | None = None
) -> tuple[bool, str]:
    """(ok, message): ok when the newest heartbeat (of ``instance``, or of any replica when
    None) is at most ``max_age`` old. Never raises; an unreachable store is not ok.
    The message names the last job and the age and outcome of every job's last run."""
    try:
        with store.session() as session:
            query = select(Setting)
            if instance is not None:
                query = query.where(Setting.key == heartbeat_key(instance))
            else:
                query = query.where(col(Setting.key).startswith(HEARTBEAT_PREFIX))
            parsed = [_parse_beat(row.value) for row in session.exec(query)]
    except BotError as exc:
        return False, f"state store unreachable: {exc}"
    beats = [b for b in parsed if b is not None]
    if not beats:
        who = f"instance {instance}" if instance else "any instance"
        return False, f"no heartbeat recorded for {who}"
    beat = max(beats, key=lambda b: b["at"])
    now = clock.now()
    age = (now - beat["at"]).total_seconds()
    role = "leader" if beat.get("leader") else "standby"
    outcome = "ok" if beat.get("ok", True) else "failed"
    detail = (
        f"{beat.get('instance')} ({role}) last ran {beat.get('job')} {age:.0f}s ago: "
        f"{outcome}, {beat.get('summary', '')}"
    )
    jobs = beat.get("jobs", {})
    if jobs:
        parts = []
        for name in sorted(jobs):
            job = jobs[name]
            at = _parse_at(job["at"])
            if at is None:
                continue
            state = "ok" if job["ok"] else "failed"
            parts.append(f"{name} {(now - at).total_seconds():.0f}s ago {state}")
        if parts:
            detail += f" [jobs: {', '.join(parts)}]"
    if age > max_age.total_seconds():
        return False, f"stale: {detail} (older than {max_age.total_seconds():.0f}s)"
    return True, f"alive: {detail}"


def _parse_at(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _parse_beat(value: str) -> Beat | None:
    """The stored heartbeat, or None when it is not one (never raises)."""
    try:
        return _BEAT.validate_json(value)
    except ValidationError:
        return None
