"""In-memory fakes of the bot's external systems, shipped with the package for tests.

Each fake records what it was asked and behaves like the real service on the points
the bot depends on. Areas add their fakes here as re-exports.
"""

from __future__ import annotations

# Sentry: the HTTP API, usable as httpx.MockTransport(fake.handler) or fake.serve().
from bot.sentry.fake import FakeSentry, Fault, RecordedRequest

__all__ = ["FakeSentry", "Fault", "RecordedRequest"]
