"""What the HTTP routes need, composed once from the app's settings.

:class:`HttpParts` is the composition root of the HTTP surface: ``create_app`` takes
it, each route module reads only what it needs from it, and tests build one with
their own store, clock and fakes. :func:`build_http_parts` is the one place it is
composed from :class:`~bot.settings.Settings` (used by ``serve``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.adapters.prometheus import Telemetry
from bot.clock import Clock
from bot.interfaces.app import App
from bot.interfaces.leader import LeaseElector
from bot.sentry.webhook_envelope import MAX_BODY_BYTES
from bot.settings import Settings
from bot.store.db import Store


def _nothing() -> None:
    return None


@dataclass
class HttpParts:
    """The routes' collaborators.

    ``wake_inbox`` is called after a webhook delivery is recorded (the local inbox
    worker looks at once); ``elector`` answers "is a leader known" for ``/readyz``.
    """

    app: App
    elector: LeaseElector
    telemetry: Telemetry
    sentry_client_secret: bytes | None
    wake_inbox: Callable[[], None] = _nothing
    max_body_bytes: int = MAX_BODY_BYTES
    max_skew_seconds: int = 300
    extra: dict[str, object] = field(default_factory=dict)  # room for sibling modules

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def clock(self) -> Clock:
        return self.app.clock

    @property
    def settings(self) -> Settings:
        return self.app.settings


def build_http_parts(
    app: App,
    elector: LeaseElector,
    telemetry: Telemetry,
    *,
    wake_inbox: Callable[[], None] = _nothing,
) -> HttpParts:
    """The HTTP parts from ``app.settings`` (``SENTRY_CLIENT_SECRET``, skew tolerance)."""
    secret = app.settings.sentry_client_secret
    return HttpParts(
        app=app,
        elector=elector,
        telemetry=telemetry,
        sentry_client_secret=secret.get_secret_value().encode() if secret else None,
        wake_inbox=wake_inbox,
        max_skew_seconds=app.settings.webhook_max_skew_seconds,
    )
