"""Poll cost: the bot's poll-and-track against a bare HTTP loop over the same pages.

A FakeSentry on loopback serves 10,000 issues (100 pages of 100; 1,000 of them in the
project ``small``). Measured in one run:

The fake runs in its own process (like a real, remote Sentry), so its Python work does
not compete with the measured client for one interpreter lock.

(a) ``poll_ratio``: median time of ``bot.pipeline.poll.poll_and_track`` (SentryApiSource over
    HttpSentryClient into a fresh SQLite store, what ``cycle`` does to poll) divided by
    the median time of the direct way to do the same work: a bare httpx loop fetching
    the same 100 pages (same server, page size and Link cursors) AND inserting the
    10,000 issues into the same fresh store with one sqlite3 ``executemany`` in one
    transaction (:func:`direct_insert`). Schema upgrades are not timed on either side.
(b) ``repeat_poll_requests``: requests a second poll with no changes makes.
(c) peak traced memory (tracemalloc, in a subprocess so the fake server's allocations
    are not counted) of poll-and-track at 1,000 and 10,000 issues.

Run: ``.venv/bin/python bench/poll.py``; the last five lines are the figures.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import SystemClock
from bot.pipeline.poll import poll_and_track
from bot.pipeline.sources import SentryApiSource
from bot.store.db import Store
from bot.testing.loopback import serve_handler
from bot.testing.sentry import FakeSentry

TOKEN = "bench-token"
TOTAL = 10_000
SMALL = 1_000
REPS = 5


def build_fake() -> FakeSentry:
    clock = SystemClock()
    fake = FakeSentry(clock=clock, token=TOKEN, rate_limit=10**9)
    now = clock.now()
    for n in range(TOTAL):
        fake.add_issue(
            project="small" if n % 10 == 0 else "backend",
            title=f"Error: failure number {n} in handler",
            lastSeen=now - timedelta(minutes=n),
            count=n % 50 + 1,
            userCount=n % 7,
        )
    return fake


class CachedPages:
    """The fake's answers, cached by URL: the fake rebuilds the whole 10k-issue list for
    every page (O(n) per request), which would swamp both sides of the ratio. The data
    does not change during a measurement, so an identical URL gets the identical body.
    Counts every request it receives (cached or not) in a counter shared across
    processes."""

    def __init__(self, fake: FakeSentry, counter: Any = None) -> None:
        self.fake = fake
        self.counter = counter if counter is not None else multiprocessing.Value("q", 0)
        self._cache: dict[str, httpx.Response] = {}

    @property
    def requests(self) -> int:
        return int(self.counter.value)

    def __call__(self, request: httpx.Request, sleep: object) -> httpx.Response:
        with self.counter.get_lock():
            self.counter.value += 1
        key = str(request.url.copy_with(scheme="http", host="x", port=None))
        hit = self._cache.get(key)
        if hit is None:
            hit = self.fake.respond(request, on_timeout=lambda _r: None)
            if hit.status_code == 200:
                self._cache[key] = hit
        return hit


_DIRECT_INSERT = (
    "INSERT INTO tracked_issue (id, short_id, title, permalink, project, level, status,"
    " count, user_count, first_seen, last_seen, raw, triage, state, resolved_by_bot,"
    " requires_approval, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', 'new', 0, 0, ?, ?)"
)


def _stamp(value: str | None) -> str | None:
    # The store's UTC text form (what SQLAlchemy's SQLite DateTime bind processor writes).
    if not value:
        return None
    at = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(" ", "microseconds")


def direct_insert(db: Path, items: list[dict[str, Any]]) -> None:
    """The same rows into the same (upgraded) store by hand: one sqlite3 executemany in
    one transaction, each issue's JSON as text; no diffing, no transitions journal."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.executemany(
                _DIRECT_INSERT,
                [
                    (
                        i["id"],
                        i["shortId"],
                        i["title"],
                        i.get("permalink") or "",
                        i["project"]["slug"],
                        i.get("level") or "error",
                        i.get("status") or "unresolved",
                        int(i.get("count") or 0),
                        int(i.get("userCount") or 0),
                        _stamp(i.get("firstSeen")),
                        _stamp(i.get("lastSeen")),
                        json.dumps(i),
                        now,
                        now,
                    )
                    for i in items
                ],
            )
    finally:
        conn.close()


def bare_loop(base_url: str, db: Path | None = None) -> int:
    """Fetch every page, following the Link cursor, then (with ``db``) insert the issues
    the direct way (:func:`direct_insert`); returns the issue count."""
    items: list[dict[str, Any]] = []
    params: list[tuple[str, str]] = [("query", "is:unresolved"), ("sort", "date"), ("limit", "100")]
    url = f"{base_url}/api/0/organizations/acme/issues/"
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        cursor: str | None = None
        while True:
            response = http.get(url, params=[*params, ("cursor", cursor)] if cursor else params)
            response.raise_for_status()
            items += response.json()
            nxt = response.links.get("next") or {}
            if nxt.get("results") != "true":
                break
            cursor = nxt["cursor"]
    if db is not None:
        direct_insert(db, items)
    return len(items)


def bot_poll(base_url: str, db: Path, projects: tuple[str, ...] = ()) -> tuple[float, int]:
    """Upgrade a fresh store (untimed), then time one poll-and-track; returns (s, tracked)."""
    store = Store(f"sqlite:///{db}")
    store.upgrade()
    clock = SystemClock()
    client = HttpSentryClient(org="acme", token=TOKEN, base_url=base_url, clock=clock)
    try:
        start = time.perf_counter()
        result = poll_and_track(store, SentryApiSource(client, projects=projects), clock)
        elapsed = time.perf_counter() - start
    finally:
        client.close()
        store.dispose()
    return elapsed, len(result.tracked.new)


def measure_memory(base_url: str, project: str) -> None:
    """Subprocess mode: print the tracemalloc peak (MiB) of one poll-and-track."""
    projects = (project,) if project != "-" else ()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'state.db'}")
        store.upgrade()
        clock = SystemClock()
        client = HttpSentryClient(org="acme", token=TOKEN, base_url=base_url, clock=clock)
        tracemalloc.start()
        result = poll_and_track(store, SentryApiSource(client, projects=projects), clock)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        client.close()
        store.dispose()
    print(json.dumps({"peak_mib": peak / 2**20, "tracked": len(result.tracked.new)}))


def memory_in_subprocess(base_url: str, project: str) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory", base_url, project],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(data["peak_mib"]), int(data["tracked"])


def _serve_forever(counter: Any, ready: Any, stop: Any) -> None:
    """Child process: build the fake, serve it on loopback, report the URL, wait for stop."""
    pages = CachedPages(build_fake(), counter)
    with serve_handler(pages) as base_url:
        ready.put(base_url)
        stop.wait()


@contextmanager
def fake_sentry_process() -> Iterator[tuple[str, CachedPages]]:
    """The fake Sentry in its own process, as a real Sentry would be: the server's Python
    work does not compete with the measured client for this process's interpreter lock.
    Yields the URL and a page counter view."""
    counter = multiprocessing.Value("q", 0)
    ready: Any = multiprocessing.Queue()
    stop = multiprocessing.Event()
    child = multiprocessing.Process(target=_serve_forever, args=(counter, ready, stop))
    child.start()
    try:
        base_url = ready.get(timeout=300)
        view = CachedPages.__new__(CachedPages)
        view.counter = counter
        yield base_url, view
    finally:
        stop.set()
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()


def main() -> None:
    print(f"building FakeSentry with {TOTAL} issues in a server process ...", flush=True)
    with fake_sentry_process() as (base_url, pages), tempfile.TemporaryDirectory() as tmp:
        print("warming the page cache ...", flush=True)
        bare_loop(base_url)
        bot_poll(base_url, Path(tmp) / "warm.db")
        bare_times, bot_times = [], []
        for rep in range(REPS):
            direct_db = Path(tmp) / f"direct{rep}.db"
            upgraded = Store(f"sqlite:///{direct_db}")
            upgraded.upgrade()  # untimed, as for the bot
            upgraded.dispose()
            start = time.perf_counter()
            fetched = bare_loop(base_url, direct_db)
            bare_times.append(time.perf_counter() - start)
            assert fetched == TOTAL, fetched
            elapsed, tracked = bot_poll(base_url, Path(tmp) / f"rep{rep}.db")
            assert tracked == TOTAL, tracked
            bot_times.append(elapsed)
            print(f"rep {rep}: bare {bare_times[-1]:.2f}s, bot {bot_times[-1]:.2f}s", flush=True)
        ratio = statistics.median(bot_times) / statistics.median(bare_times)

        db = Path(tmp) / "repeat.db"
        bot_poll(base_url, db)
        before = pages.requests
        bot_poll(base_url, db)
        repeat = pages.requests - before

        bot_poll(base_url, Path(tmp) / "warm-small.db", ("small",))
        mem_1k, n_1k = memory_in_subprocess(base_url, "small")
        mem_10k, n_10k = memory_in_subprocess(base_url, "-")
        assert (n_1k, n_10k) == (SMALL, TOTAL), (n_1k, n_10k)

    print(f"bare loop median {statistics.median(bare_times):.2f}s over {REPS} reps")
    print(f"poll-and-track median {statistics.median(bot_times):.2f}s over {REPS} reps")
    print(f"peak traced memory: {mem_1k:.1f} MiB at {n_1k}, {mem_10k:.1f} MiB at {n_10k}")
    print(f"poll_ratio: {ratio:.2f}")
    print(f"repeat_poll_requests: {repeat}")
    print(f"peak_mem_1k_mib: {mem_1k:.1f}")
    print(f"peak_mem_10k_mib: {mem_10k:.1f}")
    print(f"mem_growth_1k_to_10k_mib: {mem_10k - mem_1k:.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory":
        measure_memory(sys.argv[2], sys.argv[3])
    else:
        main()
