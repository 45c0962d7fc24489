"""Self-monitoring: the bot's own Sentry events are scrubbed of secrets, and scheduled jobs
check in as cron monitors. sentry-sdk runs for real with a transport that keeps the
envelopes in memory (no network); assertions look at the serialized bytes that would
have been sent."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from bot.adapters.selfmon import (
    SecretScrubber,
    init_selfmon,
    monitor_config,
    monitor_slug,
    monitored,
    secret_variants,
    secrets_from_settings,
)
from bot.clock import FakeClock
from bot.interfaces.leader import LeaseElector
from bot.interfaces.scheduler import JOBS, BotScheduler, SchedulerConfig
from bot.settings import load_settings
from bot.store.db import Store
from bot.testing import RecordingSteps

TOKEN = "sntrys_eyJpYXQiOjE3MDAwMDAwMDAsInVybCI6Imh0dHBzOi8vc2VudHJ5LmlvIn0_SECRETPART"
GH_TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
WEBHOOK = "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"
TARGET_DSN = "postgresql://bot:s3cr3t-pa55@db.internal:5432/jobs"
DSN = "https://publickey@o1.ingest.example.invalid/42"
ALL = [TOKEN, GH_TOKEN, WEBHOOK, TARGET_DSN]
FORBIDDEN = [TOKEN, GH_TOKEN, "XXXXXXXXXXXXXXXXXXXXXXXX", "s3cr3t-pa55", "SECRETPART"]


class MemoryTransport(Transport):
    """Keeps every envelope the SDK would have sent."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [
            json.loads(item.get_bytes())
            for env in self.envelopes
            for item in env.items
            if item.type == kind
        ]

    def wire(self) -> bytes:
        return b"".join(env.serialize() for env in self.envelopes)


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    t = MemoryTransport()
    assert init_selfmon(DSN, release="bot@1.2.3", environment="test", secrets=ALL, transport=t)
    yield t
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_isolation_scope().clear()


def assert_clean(transport: MemoryTransport) -> None:
    wire = transport.wire()
    assert wire, "nothing was sent"
    for secret in FORBIDDEN:
        assert secret.encode() not in wire, f"{secret[:8]}… leaked"


def leaky_job(token: str) -> None:
    config = {"webhook": WEBHOOK, "dsn": TARGET_DSN}  # a local variable full of secrets
    raise RuntimeError(f"auth failed with token {token} posting to {config['webhook']}")


def test_exception_event_is_scrubbed_everywhere(transport: MemoryTransport) -> None:
    sentry_sdk.set_extra("target", {"dsn": TARGET_DSN, "note": "password s3cr3t-pa55"})
    sentry_sdk.set_tag("token", GH_TOKEN)
    sentry_sdk.add_breadcrumb(message=f"GET {WEBHOOK}", data={"detail": f"Bearer {TOKEN}"})
    try:
        leaky_job(TOKEN)
    except RuntimeError as exc:
        sentry_sdk.capture_exception(exc)
    assert_clean(transport)
    (event,) = transport.items("event")
    (value,) = event["exception"]["values"]
    assert value["value"] == "auth failed with token [redacted] posting to [redacted]"
    assert all("vars" not in f for f in value["stacktrace"]["frames"])
    assert event["extra"]["target"]["dsn"] == "[redacted]"
    assert event["extra"]["target"]["note"] == "password [redacted]"
    assert event["tags"]["token"] == "[redacted]"
    crumb = event["breadcrumbs"]["values"][-1]
    assert crumb["message"] == "GET [redacted]"
    assert crumb["data"]["detail"] == "Bearer [redacted]"
    assert event["release"] == "bot@1.2.3" and event["environment"] == "test"


def test_logged_errors_and_log_breadcrumbs_are_scrubbed(transport: MemoryTransport) -> None:
    log = logging.getLogger("bot.some.adapter")
    log.warning("retrying with token %s", TOKEN)  # becomes a breadcrumb
    log.error("Sentry refused %s for %s", GH_TOKEN, TARGET_DSN)  # becomes an event
    assert_clean(transport)
    (event,) = transport.items("event")
    assert "[redacted]" in json.dumps(event["logentry"])
    assert any("[redacted]" in (c.get("message") or "") for c in event["breadcrumbs"]["values"])


def test_without_a_dsn_nothing_is_enabled() -> None:
    assert init_selfmon(None, release=None, environment=None, secrets=[TOKEN]) is False
    assert not sentry_sdk.get_client().is_active()
    with monitored("job", 60):  # a harmless no-op
        pass


# --- cron monitors ---------------------------------------------------------------------


def test_monitored_job_checks_in_progress_then_ok(transport: MemoryTransport) -> None:
    with monitored("sentry-bot-poll", 90):
        pass
    first, last = transport.items("check_in")
    assert (first["status"], last["status"]) == ("in_progress", "ok")
    assert first["check_in_id"] == last["check_in_id"]
    assert first["monitor_slug"] == "sentry-bot-poll"
    assert first["monitor_config"]["schedule"] == {"type": "interval", "value": 2, "unit": "minute"}
    assert last["environment"] == "test"


def test_failing_job_checks_in_error_and_still_raises(transport: MemoryTransport) -> None:
    @monitored("sentry-bot-outbox", 15)
    def job() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        job()
    statuses = [c["status"] for c in transport.items("check_in")]
    assert statuses == ["in_progress", "error"]
    job_ok = monitored("again", 15)(lambda: None)
    job_ok()
    job_ok()  # the decorator is reusable: one fresh check-in pair per call
    assert [c["status"] for c in transport.items("check_in")][2:] == [
        "in_progress",
        "ok",
        "in_progress",
        "ok",
    ]


def test_scheduler_jobs_check_in_only_on_the_leader(
    transport: MemoryTransport, tmp_path: Path, clock: FakeClock
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    store.upgrade()
    config = SchedulerConfig(intervals={n: 60 for n in JOBS})
    a_steps, b_steps = RecordingSteps(fail={"outbox"}), RecordingSteps()
    a = BotScheduler(
        store,
        a_steps,
        LeaseElector(store, holder="a", ttl=timedelta(minutes=1), clock=clock),
        clock,
        config,
    )
    b = BotScheduler(
        store,
        b_steps,
        LeaseElector(store, holder="b", ttl=timedelta(minutes=1), clock=clock),
        clock,
        config,
    )
    a.run_job("poll")
    b.run_job("poll")  # standby: must not check in (it would mask a dead leader)
    a.run_job("outbox")
    checkins = [(c["monitor_slug"], c["status"]) for c in transport.items("check_in")]
    assert checkins == [
        ("sentry-bot-poll", "in_progress"),
        ("sentry-bot-poll", "ok"),
        ("sentry-bot-outbox", "in_progress"),
        ("sentry-bot-outbox", "error"),
    ]
    (event,) = transport.items("event")  # the failing step was reported once
    assert "outbox failed on purpose" in json.dumps(event)
    store.dispose()


# --- pure helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(1, 1), (15, 1), (60, 1), (61, 2), (300, 5), (900, 15)]
)
def test_schedule_rounds_up_to_whole_minutes(seconds: float, minutes: int) -> None:
    assert monitor_config(seconds)["schedule"]["value"] == minutes  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("sentry-bot-poll", "sentry-bot-poll"),
        ("Sentry Bot: Poll!", "sentry-bot-poll"),
        ("!!!", "job"),
        ("x" * 80, "x" * 50),
    ],
)
def test_monitor_slugs_are_valid(name: str, slug: str) -> None:
    assert monitor_slug(name) == slug


def test_secret_variants_cover_url_passwords_and_webhook_paths() -> None:
    assert {"s3cr3t-pa55", "bot:s3cr3t-pa55", TARGET_DSN} <= secret_variants(TARGET_DSN)
    assert "/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX" in secret_variants(WEBHOOK)
    encoded = secret_variants("postgresql://u:p%40ss%2Fword@h/db")
    assert {"p@ss/word", "p%40ss%2Fword"} <= encoded
    short = secret_variants("postgresql://u:ab@h/db")
    assert "ab" not in short  # too short to scrub on its own without mangling events
    assert {"postgresql://u:ab@h/db", "u:ab"} <= short
    assert secret_variants("") == set()


def test_scrubber_leaves_other_text_and_types_alone() -> None:
    scrub = SecretScrubber([TOKEN, None, ""])
    data = {"n": 3, "ok": True, "none": None, "list": ["a", TOKEN], TOKEN: "key"}
    assert scrub.scrub(data) == {
        "n": 3,
        "ok": True,
        "none": None,
        "list": ["a", "[redacted]"],
        "[redacted]": "key",
    }
    assert SecretScrubber([]).scrub_text("plain") == "plain"


def test_secrets_from_settings_collects_every_secret() -> None:
    settings = load_settings(
        environ={
            "SENTRY_AUTH_TOKEN": TOKEN,
            "GITHUB_TOKEN": GH_TOKEN,
            "SLACK_WEBHOOK_URL": WEBHOOK,
            "BOT_SENTRY_DSN": DSN,
            "BOT_TARGET_JOBS_DB_URL": TARGET_DSN,
            "BOT_DATABASE_URL": "postgresql://bot:store-pw-123@db/bot",
        }
    )
    assert set(secrets_from_settings(settings)) == {
        TOKEN,
        GH_TOKEN,
        WEBHOOK,
        DSN,
        TARGET_DSN,
        "postgresql://bot:store-pw-123@db/bot",
    }
    plain = load_settings(environ={"BOT_DATABASE_URL": "sqlite:///x.db"})
    assert secrets_from_settings(plain) == []
