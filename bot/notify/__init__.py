"""Notifications: Slack-style messages, the webhook adapter and the delivery outbox."""

from __future__ import annotations

from bot.adapters.slack.webhook import SlackWebhookNotifier
from bot.notify.messages import Link, Notification, NotificationKind, escape_mrkdwn, render
from bot.notify.port import Notifier, NotifyPermanent, Payload, Sender, is_permanent
from bot.pipeline.outbox import FlushReport, OutboxFlusher, dead_letters, enqueue, status_counts

__all__ = [
    "FlushReport",
    "Link",
    "Notification",
    "NotificationKind",
    "Notifier",
    "NotifyPermanent",
    "OutboxFlusher",
    "Payload",
    "Sender",
    "SlackWebhookNotifier",
    "dead_letters",
    "enqueue",
    "escape_mrkdwn",
    "is_permanent",
    "render",
    "status_counts",
]
