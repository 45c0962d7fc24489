"""``GET /metrics``: the Prometheus text exposition of :mod:`bot.adapters.prometheus`."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.interfaces.http.parts import HttpParts


def routes(parts: HttpParts) -> list[Route]:
    registry = parts.telemetry.registry

    async def metrics(_request: Request) -> Response:
        # The store-derived families query the database: off the event loop.
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]
