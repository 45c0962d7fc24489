"""Posting to a Slack interaction's ``response_url`` (an outbox channel).

A button click carries a ``response_url`` that accepts up to five JSON posts within 30
minutes (Slack, "Handling user interaction": "You can use response_url ... up to 5
times within 30 minutes"). The bot queues those posts in the outbox
(channel ``slack_response``, payload ``{"url": ..., "body": ...}``) so an outcome
computed by the leader, maybe on another replica and after a restart, still reaches the
message. Delivery errors map exactly as for the incoming webhook (same adapter): 429/5xx
retried, other 4xx (e.g. an expired ``response_url``) dead-lettered.
"""

from __future__ import annotations

import httpx

from bot.adapters.slack.webhook import SlackWebhookNotifier
from bot.errors import NotifyError
from bot.notify.port import SLACK_RESPONSE_CHANNEL, Payload, Sender

__all__ = ["SLACK_RESPONSE_CHANNEL", "response_url_sender"]


def response_url_sender(client: httpx.Client | None = None) -> Sender:
    """An outbox sender posting ``payload["body"]`` to ``payload["url"]``."""

    def send(payload: Payload) -> None:
        url, body = payload.get("url"), payload.get("body")
        if not isinstance(url, str) or not isinstance(body, dict):
            raise NotifyError("slack_response payload needs a url and a body")
        notifier = SlackWebhookNotifier(url, client=client)
        try:
            notifier.send(body)
        finally:
            notifier.close()

    return send
