"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can do its job).

Ready means: the state store answers, its schema is at the migrations' head (a replica
started from an older image than the schema must not take traffic), and some replica
holds the leadership lease (so recorded webhooks will be processed).
"""

from __future__ import annotations

from alembic.script import ScriptDirectory
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.errors import BotError
from bot.interfaces.http.parts import HttpParts
from bot.store.db import MIGRATIONS_DIR


def head_revision() -> str | None:
    """The newest migration shipped with this code."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def readiness(parts: HttpParts) -> tuple[bool, dict[str, str]]:
    """(ready, checks) — never raises."""
    checks: dict[str, str] = {}
    try:
        current = parts.store.current_revision()
        checks["store"] = "ok"
    except Exception as exc:  # any driver error means "not reachable"
        checks["store"] = f"unreachable: {type(exc).__name__}"
        return False, checks
    head = head_revision()
    checks["migrations"] = "at head" if current == head else f"at {current}, head is {head}"
    try:
        holder = parts.elector.current()
    except BotError as exc:
        holder = None
        checks["leader"] = f"unknown: {exc}"
    else:
        checks["leader"] = holder[0] if holder else "none"
    ready = current == head and holder is not None
    return ready, checks


def routes(parts: HttpParts) -> list[Route]:
    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_request: Request) -> Response:
        ready, checks = await run_in_threadpool(readiness, parts)
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
