"""The real notifier: a Slack (or Mattermost) incoming webhook over httpx.

How the receivers answer, and how we read it:

- Slack: ``200 ok`` on success; errors are plain-text tokens in the body:
  ``400 invalid_payload`` / ``no_text`` / ``invalid_blocks`` / ``user_not_found``,
  ``403 action_prohibited`` / ``invalid_token``, ``404 channel_not_found`` /
  ``no_service`` / ``no_team``, ``410 channel_is_archived`` / ``no_active_hooks``,
  ``429`` with ``Retry-After`` seconds (about one message per second per hook),
  ``500 rollup_error``.
- Mattermost: ``200 ok``; errors are JSON ``{"id": "web.incoming_webhook.…",
  "message": …, "status_code": 400}``.

So: 2xx is delivered; 429, 408, 425 and 5xx, timeouts and connection errors are
"try again later"; every other status is permanent. A timeout after the request
was written may still have delivered the message: the outbox is at-least-once.

The webhook URL *is* the credential (anyone holding it can post). It is kept in a
wrapper whose ``repr`` shows only scheme and host, and no message we raise contains
it. Note that httpx itself logs request URLs at INFO on the ``httpx`` logger; the
CLI's logging setup must keep that logger at WARNING or above.
"""

from __future__ import annotations

import json
import math
from urllib.parse import urlsplit

import httpx

from bot.errors import ConfigError, NotifyError, NotifyRetryLater
from bot.json_types import JsonValue
from bot.notify.port import NotifyPermanent, Payload

DEFAULT_TIMEOUT_S = 10.0
_RETRYABLE_4XX = frozenset({408, 425, 429})
_MAX_CODE_LEN = 100


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…`` — what may be shown of a secret URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme or '?'}://{host}{port}/…"


class SecretUrl:
    """A URL that never shows its path or query in ``repr``/``str`` (so not in tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"SecretUrl({redact_url(self._value)!r})"

    __str__ = __repr__


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds; None when absent or not a non-negative number.

    Slack sends integer seconds. The HTTP-date form is not used by the receivers we
    talk to; it is ignored and the caller's own backoff applies.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def error_code(response: httpx.Response) -> str:
    """The receiver's short error token: Slack's body text or Mattermost's JSON ``id``."""
    text = response.text.strip()
    try:
        body: JsonValue = json.loads(text) if text.startswith("{") else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        text = body["id"]
    first = text.splitlines()[0] if text else ""
    cleaned = "".join(ch for ch in first if ch.isprintable())
    return cleaned[:_MAX_CODE_LEN] or f"http_{response.status_code}"


class SlackWebhookNotifier:
    """Posts payloads to one incoming webhook. Implements :class:`~bot.notify.port.Notifier`."""

    def __init__(
        self,
        url: str,
        client: httpx.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        scheme = urlsplit(url).scheme.lower() if url else ""
        if scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError("SLACK_WEBHOOK_URL must be an http(s) URL", url=redact_url(url))
        self._url = SecretUrl(url)
        self._target = redact_url(url)
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"SlackWebhookNotifier({self._target!r})"

    def send(self, payload: Payload) -> None:
        """POST ``payload`` as JSON; return once the receiver answered 2xx.

        Raises :class:`NotifyRetryLater` (``retry_after`` from ``Retry-After``) for
        429/408/425/5xx, timeouts and connection failures, and
        :class:`NotifyPermanent` (with ``status`` and the receiver's ``code``) for
        other statuses. Never includes the webhook URL in what it raises.
        """
        try:
            response = self._client.post(self._url.reveal(), json=payload, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise NotifyRetryLater(
                f"webhook timed out ({self._describe(exc)})", target=self._target
            ) from None
        except httpx.TransportError as exc:
            # The cause is dropped (``from None``) because transport errors may quote
            # the request URL; a scrubbed description is kept in the message instead.
            raise NotifyRetryLater(
                f"webhook unreachable ({self._describe(exc)})", target=self._target
            ) from None
        except httpx.HTTPError as exc:
            raise NotifyError(
                f"webhook request failed ({self._describe(exc)})", target=self._target
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        code = error_code(response)
        if status >= 500 or status in _RETRYABLE_4XX:
            raise NotifyRetryLater(
                f"webhook answered {status} {code}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                target=self._target,
            )
        raise NotifyPermanent(
            f"webhook refused the message: {status} {code}",
            status=status,
            code=code,
            target=self._target,
        )

    def _describe(self, exc: BaseException) -> str:
        """``Type: message`` with the secret URL (and its path) scrubbed out."""
        secret = self._url.reveal()
        text = str(exc).replace(secret, self._target)
        path = urlsplit(secret).path
        if len(path) > 1:
            text = text.replace(path, "/…")
        return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__

    def close(self) -> None:
        """Close the HTTP client if this notifier created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SlackWebhookNotifier:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
