"""The notifier port: one ``send(payload)`` call and the errors it may raise.

::

    NotifyError                 (bot.errors) delivery failed
    ├── NotifyRetryLater        (bot.errors) 429 / 5xx / timeout / connection error
    └── NotifyPermanent         (here) the webhook refused for good: 4xx such as
                                400 invalid_payload, 403 action_prohibited,
                                404 no_service / channel_not_found, 410 channel_is_archived

A sender is any callable taking the JSON payload; the outbox keeps one per channel
("slack", "github_comment", "sentry_comment"), so other adapters plug in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bot.errors import BotError, NotifyError, RetryLater
from bot.json_types import JsonObject

Payload = JsonObject
"""A Slack-style message (or an outbox channel's payload): JSON the receiver validates."""
Sender = Callable[[Payload], None]

SLACK_RESPONSE_CHANNEL = "slack_response"
"""The outbox channel of posts to a Slack interaction's ``response_url``."""


class NotifyPermanent(NotifyError):
    """The webhook refused the message for good; retrying the same payload cannot help."""

    permanent = True

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        **context: object,
    ) -> None:
        self.status = status
        self.code = code
        super().__init__(message, status=status, code=code, **context)


class Notifier(Protocol):
    """Delivers one chat message (a Slack-style webhook payload).

    ``send`` returns only when the receiver accepted the payload. It raises
    :class:`~bot.errors.NotifyRetryLater` (with ``retry_after`` seconds when the receiver
    said so) for transient failures and :class:`NotifyPermanent` when the receiver
    refused the payload or the hook is gone.
    """

    def send(self, payload: Payload) -> None: ...


def is_permanent(exc: BaseException) -> bool:
    """Whether a sender's exception means "never retry this message".

    "Try again later" errors are never permanent. An explicit ``permanent`` attribute
    wins. Every other bot error is an adapter saying "failed for good" (for instance a
    GitHub 404). Unknown exceptions (bugs) are retried, so a transient bug in a sender
    does not silently drop notifications; ``max_attempts`` still bounds them.
    """
    if isinstance(exc, RetryLater):
        return False
    flag = getattr(exc, "permanent", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(exc, BotError)
