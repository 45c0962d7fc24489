"""The bot watching itself: its own errors go to Sentry, its jobs check in as cron monitors.

Nothing happens unless ``BOT_SENTRY_DSN`` is set. When it is, every event and breadcrumb
passes through :class:`SecretScrubber` before it leaves the process: each configured
secret (Sentry/GitHub tokens, the webhook URL, DSNs and the passwords inside them) is
replaced wherever it appears — messages, exception values, breadcrumbs, extra, request
data, frame variables — and local variables are not collected at all. An attacker who
controls an exception message in a monitored app therefore cannot make the bot echo our
token back into Sentry either.

``monitored(slug, schedule_seconds)`` wraps a scheduled job in Sentry cron check-ins
(``in_progress`` then ``ok`` or ``error``). Sentry's interval units start at minutes, so
the schedule is rounded up to whole minutes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast
from urllib.parse import quote, unquote, urlsplit

import sentry_sdk
from sentry_sdk.crons import monitor as sentry_monitor

from bot.safety.redact import redact, secret_pattern
from bot.settings import Settings

if TYPE_CHECKING:
    from sentry_sdk._types import Breadcrumb, BreadcrumbHint, Event, Hint, MonitorConfig
    from sentry_sdk.transport import Transport

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
MIN_FRAGMENT = 4  # shorter pieces of a URL (a 2-letter user name) would mangle events
_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")


def secret_variants(value: str) -> set[str]:
    """``value`` plus the pieces of it that can leak on their own: the password and
    user:password of a URL, the path of a webhook URL, and their percent-encoded forms."""
    out = {value} if value else set()
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return out
    pieces: list[str] = []
    if password:
        pieces += [password, unquote(password), f"{parts.username}:{password}"]
    if parts.scheme in ("http", "https") and parts.path.strip("/") and not parts.username:
        pieces.append(parts.path)  # webhook URLs carry their secret in the path
    for piece in pieces:
        for form in (piece, quote(piece, safe=""), unquote(piece)):
            if len(form) >= MIN_FRAGMENT:
                out.add(form)
    return out


class SecretScrubber:
    """Replace every known secret in any JSON-like structure (events, breadcrumbs)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        values: set[str] = set()
        for secret in secrets:
            if secret:
                values |= secret_variants(secret)
        # Longest first, so a URL is replaced whole before its password is; a short
        # secret only where it stands alone (bot/safety/redact.py).
        self._pattern = secret_pattern(values)

    def scrub_text(self, text: str) -> str:
        """``text`` with every secret replaced by ``[redacted]``."""
        return redact(text, self._pattern, REDACTED)

    def scrub(self, value: object) -> object:
        """A copy-free, in-place-where-possible scrub of nested dicts, lists and strings."""
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {
                self.scrub_text(k) if isinstance(k, str) else k: self.scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def before_send(self, event: Event, hint: Hint) -> Event:
        """sentry-sdk ``before_send``: drop frame variables, then scrub everything."""
        for key in ("exception", "threads"):
            for entry in _dicts(_get(event, key, "values")):
                for frame in _dicts(_get(entry, "stacktrace", "frames")):
                    frame.pop("vars", None)
        # The scrubbed copy has the same shape: only strings changed.
        return cast("Event", self.scrub(event))

    def before_breadcrumb(self, crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb:
        """sentry-sdk ``before_breadcrumb``: scrub the breadcrumb."""
        return cast("Breadcrumb", self.scrub(crumb))


def _get(container: Mapping[str, object], key: str, inner: str) -> object:
    """``container[key][inner]`` when both are there (sentry-sdk events are nested dicts)."""
    value = container.get(key)
    return value.get(inner) if isinstance(value, dict) else None


def _dicts(value: object) -> list[dict[str, object]]:
    """The dict items of ``value`` when it is a list (else none)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def secrets_from_settings(settings: Settings) -> list[str]:
    """Every secret value the settings hold (tokens, webhook URL, DSNs, target DSNs)."""
    found = [
        settings.sentry_auth_token,
        settings.github_token,
        settings.slack_webhook_url,
        settings.bot_sentry_dsn,
        settings.sentry_client_secret,
        *settings.targets.values(),
    ]
    out = [s.get_secret_value() for s in found if s is not None]
    try:
        has_password = urlsplit(settings.database_url).password is not None
    except ValueError:
        has_password = False
    if has_password:
        out.append(settings.database_url)
    return out


def init_selfmon(
    dsn: str | None,
    *,
    release: str | None,
    environment: str | None,
    secrets: list[str],
    transport: Transport | None = None,
) -> bool:
    """Configure sentry-sdk for the bot's own errors when ``dsn`` is set; True if enabled.

    Every event and breadcrumb is scrubbed of ``secrets`` (and the DSN) before sending,
    local variables are never collected, and no PII is sent by default.
    """
    if not dsn:
        return False
    scrubber = SecretScrubber([*secrets, dsn])
    sentry_sdk.init(
        dsn=dsn,
        release=release,
        environment=environment,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrubber.before_send,
        before_breadcrumb=scrubber.before_breadcrumb,
        transport=transport,
        # No sentry-trace / baggage headers on outgoing requests: the default ('.*')
        # sends the DSN's public key in `baggage` to Slack, GitHub and every target.
        trace_propagation_targets=[],
    )
    log.info("self-monitoring enabled (environment=%s, release=%s)", environment, release)
    return True


def monitor_slug(name: str) -> str:
    """A valid Sentry monitor slug (lowercase letters, digits, - and _; at most 50)."""
    slug = _SLUG_BAD.sub("-", name.lower()).strip("-")
    return (slug or "job")[:50]


def monitor_config(
    schedule_seconds: float, *, checkin_margin_minutes: int = 5, max_runtime_minutes: int = 30
) -> MonitorConfig:
    """An interval schedule in whole minutes (Sentry's smallest unit), rounded up."""
    minutes = max(1, math.ceil(schedule_seconds / 60))
    return {
        "schedule": {"type": "interval", "value": minutes, "unit": "minute"},
        "checkin_margin": checkin_margin_minutes,
        "max_runtime": max_runtime_minutes,
        "timezone": "UTC",
    }


@contextmanager
def monitored(
    slug: str,
    schedule_seconds: float,
    *,
    checkin_margin_minutes: int = 5,
    max_runtime_minutes: int = 30,
) -> Iterator[None]:
    """Check the wrapped job in with Sentry Crons: in_progress, then ok, or error if it
    raises (the exception propagates). A no-op when self-monitoring is not enabled.
    Usable as ``with monitored(...):`` or as a decorator."""
    if not sentry_sdk.get_client().is_active():
        yield
        return
    config = monitor_config(
        schedule_seconds,
        checkin_margin_minutes=checkin_margin_minutes,
        max_runtime_minutes=max_runtime_minutes,
    )
    with sentry_monitor(monitor_slug=monitor_slug(slug), monitor_config=config):
        yield
