"""Issue sources: the Sentry API poll (watermark ties) and replay files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.errors import SentryBadResponse
from bot.pipeline.sources import ReplaySource, SentryApiSource, since_filter
from bot.testing import FakeSentry

SEED = Path(__file__).parents[2] / "bot" / "demo" / "seed_incidents.json"


def api_source(fake: FakeSentry, clock: FakeClock) -> SentryApiSource:
    client = HttpSentryClient(
        org="acme",
        token="t",
        base_url="https://us.sentry.io",
        transport=httpx.MockTransport(fake.handler),
        clock=clock,
    )
    return SentryApiSource(client, query="is:unresolved", environments=["production"])


def test_since_filter_floors_to_the_second() -> None:
    since = datetime(2026, 3, 1, 11, 55, 0, 987654, tzinfo=UTC)
    assert since_filter(since) == "lastSeen:>=2026-03-01T11:55:00"


@pytest.mark.parametrize("micro", [0, 1, 500_000, 999_999])
def test_poll_never_misses_an_issue_whose_last_seen_equals_the_watermark(
    clock: FakeClock, micro: int
) -> None:
    fake = FakeSentry(clock=clock)
    watermark = datetime(2026, 3, 1, 11, 55, 0, micro, tzinfo=UTC)
    tie = fake.add_issue(culprit="tie")
    fake.add_event(tie["id"], at=watermark)
    older = fake.add_issue(culprit="older")
    fake.add_event(older["id"], at=watermark - timedelta(seconds=2))
    polled = list(api_source(fake, clock).poll(watermark))
    assert [i.culprit for i in polled] == ["tie"]


def test_poll_without_since_reads_all_sorted_by_last_seen(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock)
    for hours in (5, 1, 3):
        issue = fake.add_issue(culprit=f"{hours}h")
        fake.add_event(issue["id"], at=clock.now() - timedelta(hours=hours))
    polled = list(api_source(fake, clock).poll(None))
    assert [i.culprit for i in polled] == ["1h", "3h", "5h"]
    params = fake.requests[-1].params
    assert params["query"] == ["is:unresolved"]
    assert params["sort"] == ["date"]
    assert params["environment"] == ["production"]


def test_replay_seed_file_has_every_seed_issue_with_latest_event() -> None:
    source = ReplaySource(SEED)
    by_short = {i.short_id: i for i in source.poll(None)}
    assert {"BLUE-BANDED-BEE-40", "BLUE-BANDED-BEE-42", "BLUE-BANDED-BEE-3Y"} <= set(by_short)
    assert {"BLUE-BANDED-BEE-6C", "BLUE-BANDED-BEE-7G"} <= set(by_short)
    bee42 = by_short["BLUE-BANDED-BEE-42"]
    assert bee42.level == "warning" and bee42.count == 718
    assert by_short["BLUE-BANDED-BEE-40"].user_count == 8
    texts = ""
    for issue in by_short.values():
        latest = source.latest_event(issue.id)
        assert latest is not None, issue.short_id
        events = source.events(issue.id, stats_period="14d")
        assert events and events[0].date_created == latest.date_created, issue.short_id
        texts += "\n".join(e.text() for e in [latest, *events])
    for verbatim in (
        "sql: transaction has already been committed or rolled back",
        "context deadline exceeded",
        "integrity-hash-retry-lock-busy",
        "20260417",
        'unable to authenticate using mechanism "SCRAM-SHA-256"',
        "WRONGPASS invalid username-password pair or user is disabled.",
        'pq: null value in column "started_at" of relation "resource_backups" violates '
        "not-null constraint",
        "worker.offline_count > 0",
        "0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d",
        "106010",
    ):
        assert verbatim in texts, verbatim
    frames = source.latest_event(by_short["BLUE-BANDED-BEE-6C"].id)
    assert frames is not None
    assert {f["in_app"] for f in frames.frames()} == {True, False}


def test_replay_poll_since_and_events_window(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    source = ReplaySource(SEED, clock=clock)
    recent = list(source.poll(datetime(2026, 3, 1, 11, 0, tzinfo=UTC)))
    assert recent and all(
        i.last_seen and i.last_seen >= clock.now() - timedelta(hours=1) for i in recent
    )
    bee40 = next(i for i in source.poll(None) if i.short_id == "BLUE-BANDED-BEE-40")
    assert source.events(bee40.id, stats_period="24h") == []
    assert len(source.events(bee40.id, stats_period="31h")) == 1
    assert len(source.events(bee40.id, stats_period="48h")) == 2


def test_replay_accepts_a_bare_list(tmp_path: Path) -> None:
    path = tmp_path / "issues.json"
    item = {"id": "1", "shortId": "P-1", "title": "t", "project": {"id": "1", "slug": "p"}}
    path.write_text(json.dumps([item]))
    assert [i.id for i in ReplaySource(path).poll(None)] == ["1"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"events": {}}', "must be a list of issues"),
        ('[{"id": "1", "shortId": "P-1", "title": "t"}]', "project"),
        (
            '[{"id": "1", "shortId": "P-1", "title": "t", "project": {"id": "1", "slug": "p"},'
            ' "count": "many"}]',
            "count",
        ),
        ('{"issues": [], "events": {"1": [{"message": "no id"}]}}', "eventID"),
    ],
)
def test_replay_errors_name_file_and_item(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SentryBadResponse) as info:
        ReplaySource(path)
    message = str(info.value)
    assert fragment in message
    assert "bad.json" in message


def test_replay_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SentryBadResponse, match="cannot read"):
        ReplaySource(tmp_path / "nope.json")
