"""``sentry-bot serve`` as an operator starts it: HTTP and the scheduler in one process,
probes answer, a signed webhook is accepted, SIGTERM stops both and exits 0."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.testing.sentry_webhooks import FakeWebhookSender

ROOT = Path(__file__).parents[2]
SECRET = "serve-cli-secret-" + "k" * 20


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        out.put(line)


def test_serve_answers_probes_metrics_and_webhooks_then_exits_0_on_sigterm(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "BOT_"))}
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "BOT_DATABASE_URL": url,
        "BOT_REPLAY_FILE": str(ROOT / "bot" / "demo" / "seed_incidents.json"),
        "BOT_PLAYBOOKS_DIR": str(ROOT / "playbooks"),
        "BOT_INSTANCE_ID": "serve-test",
        "SENTRY_CLIENT_SECRET": SECRET,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        base = None
        deadline = time.monotonic() + 90
        while base is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if "serving on http://" in line:
                base = line.split("serving on ")[1].split()[0]
        assert base, "".join(seen)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/healthz").text == "ok\n"
            ready = http.get("/readyz")
            for _ in range(300):  # the lease is taken by the first scheduler tick
                if ready.status_code == 200:
                    break
                time.sleep(0.1)
                ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {
                "ready": True,
                "store": "ok",
                "migrations": "at head",
                "leader": "serve-test",
            }
            sender = FakeWebhookSender(SECRET)
            d = sender.issue("assigned", {"id": "1", "shortId": "X-1"}, at=datetime.now(UTC))
            assert http.post("/hooks/sentry", content=d.body, headers=d.headers).status_code == 202
            bad = {**d.headers, "Sentry-Hook-Signature": "f" * 64}
            assert http.post("/hooks/sentry", content=d.body, headers=bad).status_code == 401
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(http.get("/metrics").text)
                for s in f.samples
            }
        assert samples[("leader_is_leader", ())] == 1.0
        accepted = (("action", "assigned"), ("resource", "issue"), ("result", "accepted"))
        assert samples[("sentry_webhooks_received_total", accepted)] == 1.0
        refused = (("action", "other"), ("resource", "issue"), ("result", "bad_signature"))
        assert samples[("sentry_webhooks_received_total", refused)] == 1.0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "lease scheduler released by serve-test" in output
