"""Deliveries shaped like Sentry's, for tests, the bench and local trials.

Follows getsentry/sentry ``src/sentry/sentry_apps/api/serializers/app_platform_event.py``
(``AppPlatformEvent.body`` / ``sentry_headers``): body = JSON of ``action``,
``installation.uuid``, ``data``, ``actor``; headers ``Content-Type: application/json``,
``Request-ID`` (uuid4 hex, new per attempt), ``Sentry-Hook-Resource``,
``Sentry-Hook-Timestamp`` (``int(time())`` per attempt) and ``Sentry-Hook-Signature``
(``SentryApp.build_signature``: hex HMAC-SHA256 of the body with the client secret).
The data shapes follow ``src/sentry/sentry_apps/tasks/sentry_apps.py``: ``issue.*``
carries ``data.issue`` (the serialized group, ``id`` a string, plus ``url``,
``web_url``, ``project_url``); ``event_alert.triggered`` carries ``data.event`` (with
``issue_id`` as a string) and ``data.triggered_rule``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from bot.json_types import JsonObject
from bot.sentry.webhook_envelope import signature

SENTRY_ACTOR = {"type": "application", "id": "sentry", "name": "Sentry"}


def user_actor(user_id: int = 1, name: str = "Jane Doe") -> JsonObject:
    return {"type": "user", "id": user_id, "name": name}


@dataclass
class SignedDelivery:
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeWebhookSender:
    """Builds signed deliveries the way Sentry's ``AppPlatformEvent`` does."""

    client_secret: str
    installation_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def deliver(
        self,
        resource: str,
        action: str,
        data: JsonObject,
        *,
        at: datetime,
        actor: JsonObject | None = None,
    ) -> SignedDelivery:
        body = json.dumps(
            {
                "action": action,
                "installation": {"uuid": self.installation_uuid},
                "data": data,
                "actor": actor or SENTRY_ACTOR,
            }
        ).encode()
        return self.sign(resource, body, at=at)

    def sign(self, resource: str, body: bytes, *, at: datetime) -> SignedDelivery:
        """Headers of one attempt for ``body`` (a retry: call again, same body)."""
        return SignedDelivery(
            body=body,
            headers={
                "Content-Type": "application/json",
                "Request-ID": uuid.uuid4().hex,
                "Sentry-Hook-Resource": resource,
                "Sentry-Hook-Timestamp": str(int(at.timestamp())),
                "Sentry-Hook-Signature": signature(self.client_secret.encode(), body),
            },
        )

    def issue(
        self,
        action: str,
        issue: JsonObject,
        *,
        at: datetime,
        actor: JsonObject | None = None,
    ) -> SignedDelivery:
        """``issue.<action>`` for a serialized issue (as the API returns it)."""
        base = "https://sentry.example/api/0/organizations/acme/issues"
        data = {
            "issue": {
                **issue,
                "id": str(issue["id"]),
                "url": f"{base}/{issue['id']}/",
                "web_url": f"https://sentry.example/organizations/acme/issues/{issue['id']}/",
                "project_url": "https://sentry.example/organizations/acme/projects/",
            }
        }
        return self.deliver("issue", action, data, at=at, actor=actor)

    def event_alert(
        self, issue_id: str, event: JsonObject, *, at: datetime, rule: str = "stuck tasks"
    ) -> SignedDelivery:
        """``event_alert.triggered`` for an event of issue ``issue_id``."""
        data = {"event": {**event, "issue_id": str(issue_id)}, "triggered_rule": rule}
        return self.deliver("event_alert", "triggered", data, at=at)
