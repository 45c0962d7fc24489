"""Sentry Integration Platform deliveries: signature, envelope, content key.

What Sentry sends (getsentry/sentry ``src/sentry/sentry_apps/api/serializers/
app_platform_event.py``, ``AppPlatformEvent``): the body is ``json.dumps`` of
``{"action", "installation": {"uuid"}, "data", "actor": {"type", "id", "name"}}``;
the headers are ``Content-Type: application/json``, ``Request-ID`` (a fresh uuid4 per
attempt), ``Sentry-Hook-Resource``, ``Sentry-Hook-Timestamp`` (``int(time())`` when the
attempt is built) and ``Sentry-Hook-Signature`` = ``SentryApp.build_signature(body)``,
the hex HMAC-SHA256 of those exact body bytes keyed with the client secret (no prefix).
``actor`` is ``{"type": "application", "id": "sentry"}`` when Sentry itself acted
(auto-resolve, alert rules), the integration's own uuid when the change came through
its token, else ``{"type": "user", ...}``.

The data per resource (``src/sentry/sentry_apps/tasks/sentry_apps.py``):
``issue.*`` carries ``data.issue`` (the serialized group: ``id`` as a string,
``shortId``, ``status``, ``substatus``, ``statusDetails`` …); ``event_alert.triggered``
carries ``data.event`` (the event, with ``issue_id`` as a string) and
``data.triggered_rule``. Retries (3, five minutes apart) rebuild the headers — new
``Request-ID``, new timestamp — around the *same* body, which is why deliveries are
deduplicated on content, not on ``Request-ID``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from bot.errors import WebhookRejected
from bot.json_types import JsonObject, JsonValue

MAX_BODY_BYTES = 1_048_576

ISSUE_ACTIONS = frozenset({"created", "resolved", "unresolved", "assigned", "archived"})
# The resources the bot stores and processes, with the actions it knows for each.
HANDLED: dict[str, frozenset[str]] = {
    "issue": ISSUE_ACTIONS,
    "event_alert": frozenset({"triggered"}),
    "installation": frozenset({"created", "deleted"}),
}
# Resources Sentry may send that the bot acknowledges and ignores (a log line).
KNOWN_OTHER = frozenset({"metric_alert", "error", "comment", "seer", "preprod_artifact"})


def signature(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` keyed with ``secret``: ``Sentry-Hook-Signature``."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of the raw ``body``; constant-time compare.

    Verified on the bytes as received: re-serialising the JSON changes spacing and
    escaping, and such checks fail on a share of genuine deliveries
    (getsentry/sentry#71025).
    """
    if not header:
        return False
    try:
        given = header.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(signature(secret, body).encode("ascii"), given)


def content_key(resource: str, action: str, issue_id: str | None, body: bytes) -> str:
    """The dedupe key of a delivery: what it says, not which attempt carried it."""
    digest = hashlib.sha256(body).hexdigest()
    return hashlib.sha256(f"{resource}\n{action}\n{issue_id or ''}\n{digest}".encode()).hexdigest()


@dataclass(frozen=True)
class Delivery:
    """A verified, parsed delivery (what the inbox stores)."""

    resource: str
    action: str
    issue_id: str | None
    actor_type: str | None
    actor_id: str | None
    payload: JsonObject
    content_key: str


def _issue_id(value: JsonValue) -> str | None:
    # Sentry sends ids as strings; a hostile body could send anything.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isdigit() and 0 < len(value) <= 20:
        return value
    return None


def parse_delivery(resource: str, body: bytes) -> Delivery:
    """Parse a *verified* body for ``resource``; WebhookRejected when it does not fit.

    The resource header is not signed, so the body must carry what that resource
    promises (``data.issue`` for ``issue``, ``data.event.issue_id`` for ``event_alert``):
    a signed body replayed under another resource header is refused.
    """
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookRejected(f"body is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise WebhookRejected("body is not a JSON object")
    action = envelope.get("action")
    data = envelope.get("data")
    if not isinstance(action, str) or not isinstance(data, dict):
        raise WebhookRejected("envelope without 'action' and 'data'")
    if action not in HANDLED[resource]:
        raise WebhookRejected(f"unknown action {resource}.{action[:40]}")
    issue_id: str | None = None
    if resource == "issue":
        issue = data.get("issue")
        issue_id = _issue_id(issue.get("id")) if isinstance(issue, dict) else None
        if issue_id is None:
            raise WebhookRejected("issue delivery without data.issue.id")
    elif resource == "event_alert":
        event = data.get("event")
        issue_id = _issue_id(event.get("issue_id")) if isinstance(event, dict) else None
        if issue_id is None:
            raise WebhookRejected("event_alert delivery without data.event.issue_id")
    actor = envelope.get("actor")
    actor_type = actor_id = None
    if isinstance(actor, dict):
        actor_type = str(actor.get("type"))[:32] if actor.get("type") is not None else None
        actor_id = str(actor.get("id"))[:128] if actor.get("id") is not None else None
    return Delivery(
        resource=resource,
        action=action,
        issue_id=issue_id,
        actor_type=actor_type,
        actor_id=actor_id,
        payload=envelope,
        content_key=content_key(resource, action, issue_id, body),
    )
