"""Issue #9, point 6: a marker password and the bot's own Sentry DSN key leak nowhere.

The real ``python -m bot cycle`` runs with:

- a target DSN whose password has a bad ``%``-escape (psycopg quotes the raw token in
  its error: "invalid percent-encoded token: …"), for a playbook that matches, so the
  preview hits that error path and reports it;
- ``BOT_SENTRY_DSN`` set (sentry-sdk on, its ingest endpoint a loopback recorder);
- Sentry API (FakeSentry) and the Slack webhook on loopback, every request recorded
  with its headers.

Then neither marker is in stdout, stderr (DEBUG logs), the store file, the reports, or
any request to a host that is not the bot's own Sentry; and no request to Slack or the
Sentry API carries a ``baggage`` or ``sentry-trace`` header (sentry-sdk's default trace
propagation sends the DSN's public key in ``baggage`` to every host).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from bot.clock import SystemClock
from bot.testing.loopback import serve_handler
from bot.testing.sentry import FakeSentry

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sntrys_secret_test_" + "q" * 20
PASSWORD_MARKER = "PwMarker7Zq"
BAD_TARGET_DSN = f"postgresql://bot:p%zz{PASSWORD_MARKER}@127.0.0.1:5432/jobs"
DSN_KEY = "0123456789abcdef0123456789abcdef"
HOOK_PATH = "/services/T000/B000/hooksecretpath"

PLAYBOOK = {
    "id": "requeue-stuck",
    "priority": 10,
    "match": {"title": r"^Found \d+ stuck tasks"},
    "action": {
        "type": "requeue_stuck_tasks",
        "target": "jobs_db",
        "settings": {
            "table": "tasks",
            "mode": "lease_timeout",
            "lease_column": "updated_at",
            "timeout_seconds": 600,
        },
    },
    "guards": {"mode": "auto"},
}


class Recorder:
    """Records every request (method, path, headers, decoded body) a server receives."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def wrap(
        self, respond: Callable[[httpx.Request, Callable[[float], None]], httpx.Response]
    ) -> Callable[[httpx.Request, Callable[[float], None]], httpx.Response]:
        def handler(request: httpx.Request, sleep: Callable[[float], None]) -> httpx.Response:
            with self._lock:
                self.requests.append(request)
            return respond(request, sleep)

        return handler

    def texts(self) -> list[str]:
        """Every request as text: method, URL, headers and the (decompressed) body."""
        out = []
        for r in self.requests:
            body = r.content
            encoding = r.headers.get("content-encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            headers = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            out.append(f"{r.method} {r.url}\n{headers}\n\n{body.decode('utf-8', 'replace')}")
        return out


def ok(_request: httpx.Request, _sleep: Callable[[float], None]) -> httpx.Response:
    return httpx.Response(200, text="ok")


def test_a_malformed_target_password_and_the_dsn_key_leak_nowhere(tmp_path: Path) -> None:
    clock = SystemClock()
    fake = FakeSentry(clock=clock, token=TOKEN, org="acme")
    now = clock.now()
    fake.add_issue(title="Found 3 stuck tasks across 1 jobs", count="5", lastSeen=now)
    fake.add_issue(title="TypeError: x is undefined", count="5", lastSeen=now)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "requeue.yaml").write_text(yaml.safe_dump(PLAYBOOK))
    api, slack, ingest = Recorder(), Recorder(), Recorder()
    store_file = tmp_path / "state.db"
    reports = tmp_path / "reports"

    with (
        serve_handler(api.wrap(fake.respond_for_server)) as api_url,
        serve_handler(slack.wrap(ok)) as slack_url,
        serve_handler(ingest.wrap(ok)) as ingest_url,
    ):
        sentry_dsn = f"{ingest_url.replace('http://', f'http://{DSN_KEY}@')}/42"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "BOT_"))}
        env = {
            **clean,
            "PYTHONPATH": str(ROOT),
            "SENTRY_BASE_URL": api_url,
            "SENTRY_AUTH_TOKEN": TOKEN,
            "SENTRY_ORG": "acme",
            "SLACK_WEBHOOK_URL": slack_url + HOOK_PATH,
            "BOT_SENTRY_DSN": sentry_dsn,
            "BOT_DATABASE_URL": f"sqlite:///{store_file}",
            "BOT_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
            "BOT_REPORTS_DIR": str(reports),
            "BOT_TARGET_JOBS_DB_URL": BAD_TARGET_DSN,
            "BOT_LOG_LEVEL": "DEBUG",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "bot", "cycle", "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    # The error path was taken: the bad DSN was tried and reported, masked.
    notes = " ".join(str(p["note"]) for p in summary["plans"])
    assert "cannot connect to target jobs_db" in notes, summary
    assert "***" in notes
    assert slack.requests, "the unmatched issue's triage notice should have gone to Slack"
    assert api.requests

    secrets = [PASSWORD_MARKER, DSN_KEY, TOKEN, HOOK_PATH.rsplit("/", 1)[1]]
    haystacks = {
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        **{f"slack request {i}": t for i, t in enumerate(slack.texts())},
        **{f"Sentry API request {i}": t for i, t in enumerate(api.texts())},
    }
    for path in [store_file, *tmp_path.glob("state.db-*"), *reports.rglob("*")]:
        if path.is_file():
            haystacks[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for name, text in haystacks.items():
        for secret in secrets:
            if (secret == TOKEN and name.startswith("Sentry API")) or (
                secret in HOOK_PATH and name.startswith("slack")
            ):
                continue  # each is meant for its own host (Authorization / the URL)
            assert secret not in text, f"{secret[:6]}… leaked into {name}"
    # The bot's own Sentry events are scrubbed too (the DSN key belongs in those).
    for text in ingest.texts():
        assert PASSWORD_MARKER not in text
    for r in slack.requests + api.requests:
        assert "baggage" not in r.headers and "sentry-trace" not in r.headers, dict(r.headers)


def test_the_sentry_dsn_key_is_not_propagated_in_outgoing_headers() -> None:
    """In process: with self-monitoring on, an httpx request to another host carries no
    ``baggage``/``sentry-trace`` (sentry-sdk's HttpxIntegration adds them by default)."""
    import sentry_sdk

    from bot.adapters.selfmon import init_selfmon

    seen = Recorder()
    with serve_handler(seen.wrap(ok)) as url:
        assert init_selfmon(
            f"http://{DSN_KEY}@127.0.0.1:9/1", release="t", environment="t", secrets=[]
        )
        try:
            with (
                sentry_sdk.start_transaction(name="job", sampled=True),
                httpx.Client() as client,
            ):
                client.post(url + "/hook", json={"text": "hi"})
        finally:
            sentry_sdk.get_client().close()
            sentry_sdk.get_global_scope().set_client(None)
            sentry_sdk.get_isolation_scope().clear()
    [request] = seen.requests
    assert "baggage" not in request.headers and "sentry-trace" not in request.headers
    assert DSN_KEY not in "".join(seen.texts())
