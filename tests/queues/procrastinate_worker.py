"""A real procrastinate worker for tests/integration/test_queue_packs.py.

``python tests/queues/procrastinate_worker.py DSN QUEUE DIR``: runs one worker on QUEUE;
its task ``hold(name)`` writes ``DIR/<name>.started`` and waits for ``DIR/<name>.release``.
Heartbeats every second (procrastinate's own default is 10 s) so a live worker is
clearly alive; ``stalled_worker_timeout`` stays procrastinate's default (30 s).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import procrastinate

DSN, QUEUE, DIR = sys.argv[1], sys.argv[2], Path(sys.argv[3])
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DSN))


@app.task(name="hold")
async def hold(name: str) -> None:
    with (DIR / f"{name}.started").open("a") as marker:
        marker.write(f"{os.getpid()}\n")
    while not (DIR / f"{name}.release").exists():
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    with app.open():
        app.run_worker(
            queues=[QUEUE],
            concurrency=1,
            fetch_job_polling_interval=0.2,
            update_heartbeat_interval=1.0,
        )
