"""``POST /hooks/sentry``: Sentry Integration Platform webhooks.

Checks, in this order, each refusing before anything is read further or stored:

1. the secret is configured (else 503), ``Content-Type`` is JSON (else 415), a
   ``Sentry-Hook-Signature`` is present (else 401), a declared ``Content-Length`` is
   within 1 MB (else 413);
2. the body is read as a stream and refused (413) the moment it passes 1 MB — a
   client lying about or omitting ``Content-Length`` cannot make us buffer more;
   an empty body is 400;
3. the signature: hex HMAC-SHA256 of the raw bytes with ``SENTRY_CLIENT_SECRET``,
   constant-time (else 401) — before any parsing;
4. ``Sentry-Hook-Timestamp`` within ``BOT_WEBHOOK_MAX_SKEW_SECONDS`` (default 300) of
   our clock (else 400 "stale"). The timestamp is *not* signed, so this only turns
   away a naive replay of a captured delivery; Sentry builds a fresh timestamp for
   every attempt, retries included (``AppPlatformEvent.sentry_headers``), so honest
   deliveries pass. What makes a replay harmless is the content key below plus the
   fact that the bot acts on the issue as the API shows it *now*, never on the body;
5. the resource: ``issue``, ``event_alert``, ``installation`` are parsed and must carry
   what the resource promises (else 400); others (``metric_alert``, ``comment``, …)
   are acknowledged (200) and only logged;
6. the delivery is recorded in the inbox (one INSERT; a redelivery of the same
   content — resource, action, issue id, body hash — is a no-op) and the local inbox
   worker is woken. The response goes out at once (202, or 200 for a duplicate):
   processing happens on the leader, in the background.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.errors import BotError, WebhookRejected
from bot.interfaces.http.parts import HttpParts
from bot.pipeline import inbox
from bot.sentry.webhook_envelope import HANDLED, KNOWN_OTHER, parse_delivery, signature_ok

log = logging.getLogger(__name__)

PATH = "/hooks/sentry"


class _TooLarge(Exception):
    pass


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(status: int, why: str) -> Response:
    return JSONResponse({"error": why}, status_code=status)


def routes(parts: HttpParts) -> list[Route]:
    telemetry = parts.telemetry

    def count(resource: str, action: str, result: str) -> None:
        # Bounded labels: unknown resources/actions collapse to "other".
        res = resource if resource in HANDLED or resource in KNOWN_OTHER else "other"
        act = action if res in HANDLED and action in HANDLED[res] else "other"
        telemetry.webhook(res, act, result)

    async def sentry_hook(request: Request) -> Response:
        resource = request.headers.get("sentry-hook-resource", "")
        secret = parts.sentry_client_secret
        if secret is None:
            count(resource, "", "not_configured")
            return _refuse(503, "SENTRY_CLIENT_SECRET is not configured")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            count(resource, "", "bad_content_type")
            return _refuse(415, "Content-Type must be application/json")
        sig = request.headers.get("sentry-hook-signature")
        if not sig:
            count(resource, "", "unsigned")
            return _refuse(401, "Sentry-Hook-Signature missing")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > parts.max_body_bytes:
            count(resource, "", "too_large")
            return _refuse(413, f"body over {parts.max_body_bytes} bytes")
        try:
            body = await _read_limited(request, parts.max_body_bytes)
        except _TooLarge:
            count(resource, "", "too_large")
            return _refuse(413, f"body over {parts.max_body_bytes} bytes")
        except ClientDisconnect:
            count(resource, "", "disconnected")
            return _refuse(400, "client disconnected")
        if not body:
            count(resource, "", "empty")
            return _refuse(400, "empty body")
        if not signature_ok(secret, body, sig):
            count(resource, "", "bad_signature")
            log.warning("Sentry webhook with a bad signature refused (resource %r)", resource[:40])
            return _refuse(401, "bad signature")
        stamp = request.headers.get("sentry-hook-timestamp", "")
        now = parts.clock.now()
        if not stamp.isdigit() or abs(now.timestamp() - int(stamp)) > parts.max_skew_seconds:
            count(resource, "", "stale")
            return _refuse(400, "Sentry-Hook-Timestamp missing or stale")
        if resource not in HANDLED:
            count(resource, "", "ignored")
            log.info("Sentry webhook resource %r acknowledged and ignored", resource[:40])
            return JSONResponse({"status": "ignored"}, status_code=200)
        try:
            delivery = parse_delivery(resource, body)
        except WebhookRejected as exc:
            count(resource, "", "invalid")
            return _refuse(400, str(exc))
        try:
            fresh = await run_in_threadpool(
                inbox.record, parts.store, delivery, request.headers.get("request-id"), now
            )
        except BotError as exc:
            # Sentry will retry (5xx): the store is the only place work can wait.
            count(resource, delivery.action, "store_error")
            log.error("webhook not recorded: %s", exc)
            return _refuse(503, "state store unavailable")
        if not fresh:
            count(resource, delivery.action, "duplicate")
            return JSONResponse({"status": "duplicate"}, status_code=200)
        count(resource, delivery.action, "accepted")
        parts.wake_inbox()
        return JSONResponse({"status": "accepted"}, status_code=202)

    return [Route(PATH, sentry_hook, methods=["POST"])]
