"""The web console through the real app: authentication, CSRF, filters, approvals on a
real PostgreSQL target, the pause switch, and hostile event text rendered inert."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bot.clock import FakeClock
from bot.interfaces.http.console_auth import COOKIE
from bot.pipeline.guards import is_paused
from bot.store.models import OutboxMessage, RunStatus, TrackedIssue
from tests.helpers_engine import add_tasks, all_runs, tasks
from tests.http_rig import TOKEN, HttpRig, make_rig

pytestmark = pytest.mark.postgres

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' onmouseover='alert(1)",
    "</textarea></pre><svg/onload=alert(1)>",
    "{{ 7*7 }} {% raw %}",
    "javascript:alert(1)",
    '<a href="javascript:alert(1)">click</a>',
    "&lt;already&gt; &amp; entities",
    "\u202e\u0007bell and RTL override",
]


@pytest.fixture
def rig(tmp_path: Path, pg_dsn: str, clock: FakeClock) -> Iterator[HttpRig]:
    r = make_rig(tmp_path, pg_dsn, clock, approvers="U0APPROVER,alice")
    yield r
    r.app.store.dispose()


def login(client: TestClient, user: str = "alice") -> str:
    res = client.post("/login", data={"user": user, "token": TOKEN}, follow_redirects=False)
    assert res.status_code == 303, res.text
    cookie = res.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    page = client.get("/approvals")
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def test_no_credentials_no_data(rig: HttpRig) -> None:
    rig.plan()
    with TestClient(rig.asgi) as client:
        for path in ("/", "/issues/4711", "/approvals", "/pause", "/outbox"):
            res = client.get(path)
            assert res.status_code == 401 and "Sign in" in res.text
            assert "QUEUE-4711" not in res.text and "stuck" not in res.text
        client.cookies.set(COOKIE, "forged.cookie")
        assert client.get("/").status_code == 401
        client.cookies.clear()
        wrong = client.get("/", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401 and "QUEUE-4711" not in wrong.text
        bad_login = client.post("/login", data={"user": "alice", "token": "nope"})
        assert bad_login.status_code == 401 and COOKIE not in bad_login.headers.get(
            "set-cookie", ""
        )
        for path in ("/approvals/x", "/pause", "/logout"):
            assert client.post(path, data={"action": "pause", "reason": "r"}).status_code == 401
    assert all_runs(rig.app.store)[0].status == RunStatus.AWAITING_APPROVAL.value


def test_bearer_token_lists_the_tracked_issues(rig: HttpRig) -> None:
    rig.plan()
    with TestClient(rig.asgi) as client:
        res = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert res.status_code == 200 and "QUEUE-4711" in res.text
    assert "script-src" not in res.headers["content-security-policy"]  # default-src 'none'
    assert "default-src 'none'" in res.headers["content-security-policy"]


def test_filters_narrow_the_list(rig: HttpRig) -> None:
    rig.plan("1")
    rig.plan("2")
    with rig.app.store.session() as session:
        row = session.get(TrackedIssue, "2")
        assert row is not None
        row.team, row.severity, row.state = "Payments", "critical", "watching"
    with TestClient(rig.asgi) as client:
        login(client)
        everything = client.get("/").text
        payments = client.get("/?team=Payments").text
        planned = client.get("/?state=planned&playbook=stuck-tasks").text
        none = client.get("/?severity=low").text
    assert "QUEUE-1" in everything and "QUEUE-2" in everything
    assert "QUEUE-2" in payments and "QUEUE-1<" not in payments
    assert "QUEUE-1" in planned and "QUEUE-2" not in planned
    assert "no tracked issue matches" in none


def test_console_approval_executes_and_is_journaled_as_the_login_name(rig: HttpRig) -> None:
    add_tasks(rig.target_dsn, 2)
    issue, run_id = rig.plan()
    with TestClient(rig.asgi) as client:
        csrf = login(client, "alice")
        pending = client.get("/approvals").text
        assert "2 row(s) would change" in pending and run_id in pending
        res = client.post(f"/approvals/{run_id}", data={"action": "approve", "csrf": csrf})
        page = res.text
    assert res.status_code == 200 and res.url.path == f"/issues/{issue}"
    assert "approved by alice via console" in page and "succeeded" in page
    assert "Before-image" in page
    assert [t["status"] for t in tasks(rig.target_dsn)] == ["pending", "pending"]
    [run] = all_runs(rig.app.store)
    assert (run.approved_by, run.approval_channel, run.status) == ("alice", "console", "succeeded")
    assert "| alice | console |" in page  # the report's approvals table


def test_console_user_not_on_the_allowlist_changes_nothing(rig: HttpRig) -> None:
    add_tasks(rig.target_dsn, 1)
    before = tasks(rig.target_dsn)
    _, run_id = rig.plan()
    with TestClient(rig.asgi) as client:
        csrf = login(client, "mallory")
        page = client.post(f"/approvals/{run_id}", data={"action": "approve", "csrf": csrf}).text
    assert "mallory is not allowed" in page
    with TestClient(rig.asgi) as client:
        login(client, "alice")
        forged = client.get("/", params={"flash": "Session expired: re-enter the token at evil"})
    assert "evil" not in forged.text  # only messages the console signed are shown
    assert all_runs(rig.app.store)[0].status == RunStatus.AWAITING_APPROVAL.value
    assert tasks(rig.target_dsn) == before


def test_state_changes_need_the_csrf_token(rig: HttpRig) -> None:
    add_tasks(rig.target_dsn, 1)
    before = tasks(rig.target_dsn)
    _, run_id = rig.plan()
    with TestClient(rig.asgi) as client:
        login(client)
        missing = client.post(f"/approvals/{run_id}", data={"action": "approve"})
        wrong = client.post(f"/approvals/{run_id}", data={"action": "approve", "csrf": "0" * 64})
        pause = client.post("/pause", data={"action": "pause", "reason": "x"})
    assert [r.status_code for r in (missing, wrong, pause)] == [403, 403, 403]
    assert all_runs(rig.app.store)[0].status == RunStatus.AWAITING_APPROVAL.value
    assert tasks(rig.target_dsn) == before
    with rig.app.store.session() as session:
        assert is_paused(session) is None


def test_pause_switch_with_reason_and_dead_letters(rig: HttpRig) -> None:
    now = rig.app.clock.now()
    with rig.app.store.session() as session:
        session.add(
            OutboxMessage(
                channel="slack",
                dedupe_key="k1",
                kind="failed",
                payload={},
                status="dead",
                attempts=8,
                last_error="<b>404 no_service</b>",
                next_attempt_at=now,
                created_at=now,
            )
        )
    with TestClient(rig.asgi) as client:
        csrf = login(client, "alice")
        client.post("/pause", data={"action": "pause", "reason": "DB failover <b>", "csrf": csrf})
        paused = client.get("/pause").text
        with rig.app.store.session() as session:
            assert is_paused(session) == "DB failover <b> (by alice)"
        client.post("/pause", data={"action": "resume", "csrf": csrf})
        outbox = client.get("/outbox").text
    assert "DB failover &lt;b&gt; (by alice)" in paused
    assert "&lt;b&gt;404 no_service&lt;/b&gt;" in outbox
    with rig.app.store.session() as session:
        assert is_paused(session) is None


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_renders_inert(rig: HttpRig, text: str) -> None:
    add_tasks(rig.target_dsn, 1)
    issue, _ = rig.plan(title=f"Found 3 stuck tasks {text}", message=f"{text} for job x")
    with rig.app.store.session() as session:
        row = session.get(TrackedIssue, issue)
        assert row is not None
        row.team, row.permalink = text, text
        row.triage = {"indicators": [{"kind": "severity", "name": text, "effect": text}]}
    with TestClient(rig.asgi) as client:
        login(client)
        pages = [client.get(p).text for p in ("/", f"/issues/{issue}", "/approvals")]
        pages.append(client.get("/", params={"team": text}).text)
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "<svg/onload" not in html and 'href="javascript:' not in html
        assert "onerror=alert(1)>" not in html and "' onmouseover='" not in html
        assert "49" not in html.split("{{ 7*7 }}")[0][-5:]  # no template evaluation
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1] or text != HOSTILE[0]
