"""Fakes of the bot's external systems, shipped with the package for tests (yours too).

Each fake records what it was asked and behaves like the real service on the points the
bot depends on; the real adapters run against them in this project's own tests, so a
fake cannot drift silently.

- Sentry: :class:`FakeSentry`, the HTTP API in-process (``httpx.MockTransport(fake.handler)``)
  or on loopback (``with fake.serve() as url``), with fault injection (:class:`Fault`).
- GitHub: :class:`FakeGitHub` on loopback for the real PyGithub adapter, and
  :class:`InMemoryCodeHost` for the code-host port without HTTP.
- Slack-style webhook: :class:`RecordingWebhook` (scripted :class:`Reply` answers).
- Scheduler steps: :class:`RecordingSteps`.

Target databases have no fake on purpose: remediation SQL is tested against a real
PostgreSQL, because a fake cannot enforce NOT NULL or advisory-lock ownership.
"""

from __future__ import annotations

from bot.testing.github import FakeGitHub, InMemoryCodeHost
from bot.testing.sentry import FakeSentry, Fault, RecordedRequest
from bot.testing.steps import RecordingSteps
from bot.testing.webhook import RecordingWebhook, Reply

__all__ = [
    "FakeGitHub",
    "FakeSentry",
    "Fault",
    "InMemoryCodeHost",
    "RecordedRequest",
    "RecordingSteps",
    "RecordingWebhook",
    "Reply",
]
