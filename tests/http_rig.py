"""A wired bot with the Slack endpoint and the console mounted, for HTTP-level tests.

Real parts throughout: settings from an environment, the state store on PostgreSQL, an
approval-mode playbook file, a ``tasks`` table on a real PostgreSQL target, the real
executor. Slack's ``response_url`` is a loopback :class:`RecordingWebhook`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import uvicorn
import yaml
from starlette.applications import Starlette

from bot.clock import Clock
from bot.interfaces.app import App
from bot.interfaces.http.app import create_app
from bot.interfaces.http.server import build_service
from bot.interfaces.http.slack_verify import slack_signature
from bot.interfaces.scheduler import SchedulerConfig
from bot.settings import load_settings
from bot.store.db import Store
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import JOB, build_playbook, create_tasks_table, match, playbook_data

SECRET = "slack-signing-secret-for-tests-0123"
TOKEN = "console-token-for-tests-0123456789"
APPROVER = "U0APPROVER"


@dataclass
class HttpRig:
    app: App
    asgi: Starlette
    target_dsn: str

    def plan(self, issue_id: str = "4711", **kwargs: Any) -> tuple[str, str]:
        """Track a stuck-tasks issue and plan it in approval mode; (issue id, run id)."""
        from bot.interfaces.wiring import build_executor, load_matcher
        from tests.helpers_engine import track_issue

        issue = track_issue(self.app.store, self.app.clock, issue_id=issue_id, **kwargs)
        _, playbooks = load_matcher(self.app)
        executor, _ = build_executor(self.app, playbooks)
        out = executor.plan(issue, match(playbooks["stuck-tasks"], kwargs.get("job", JOB)))
        assert out.run_id is not None, out
        return issue, out.run_id


def make_rig(
    tmp_path: Path,
    pg_dsn: str,
    clock: Clock,
    *,
    approvers: str = APPROVER,
    store_url: str | None = None,
    leader: bool = True,
) -> HttpRig:
    create_tasks_table(pg_dsn)
    books = tmp_path / "playbooks"
    books.mkdir(exist_ok=True)
    data = playbook_data(guards={"mode": "approval", "approval_ttl_minutes": 60})
    build_playbook(data)  # valid before it is written
    (books / "stuck.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    settings = load_settings(
        environ={
            "BOT_DATABASE_URL": store_url or sqlalchemy_url(pg_dsn),
            "BOT_PLAYBOOKS_DIR": str(books),
            "BOT_TARGET_JOBS_DB_URL": pg_dsn,
            "SLACK_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/xyz",
            "SLACK_SIGNING_SECRET": SECRET,
            "BOT_APPROVERS": approvers,
            "BOT_CONSOLE_TOKEN": TOKEN,
            "BOT_REPLAY_FILE": str(tmp_path / "none.json"),
            "BOT_REPORTS_DIR": str(tmp_path / "reports"),
        }
    )
    app = App(settings=settings, store=Store(settings.database_url), clock=clock)
    app.store.upgrade()
    # The app exactly as `sentry-bot serve` builds it (i15's build_service + create_app);
    # this replica leads when it holds the scheduler's lease.
    service = build_service(
        app,
        config=SchedulerConfig(
            intervals={"poll": 60, "lifecycle": 300, "fixlinks": 900, "outbox": 15},
            lease_ttl=timedelta(seconds=60),
        ),
    )
    if leader:
        assert service.scheduler.elector.try_acquire()
    return HttpRig(app, create_app(service.parts), pg_dsn)


def block_actions(
    run_id: str, *, action: str = "approve", user: str = APPROVER, response_url: str = ""
) -> bytes:
    """A form-encoded ``block_actions`` body as Slack sends it (``payload=`` JSON)."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "team_id": "T0"},
        "api_app_id": "A0",
        "team": {"id": "T0", "domain": "acme"},
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0"},
        "trigger_id": "1.2.3",
        "channel": {"id": "C0", "name": "ops"},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action,
                "block_id": f"approval:{run_id}",
                "value": run_id,
                "action_ts": "1.3",
                "text": {"type": "plain_text", "text": action.title()},
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(body: bytes, ts: int, secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": slack_signature(secret, str(ts), body),
    }


@contextmanager
def serve_asgi(asgi: Any) -> Iterator[str]:
    """Serve ``asgi`` with uvicorn on 127.0.0.1 (an ephemeral port) in a thread."""
    config = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until true (generous deadline: the machine is shared)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
