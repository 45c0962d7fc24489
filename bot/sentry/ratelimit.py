"""Sentry's rate-limit headers and the client's retry timing.

Sentry announces its budget on every response::

    X-Sentry-Rate-Limit-Limit: 40                 requests allowed in the window
    X-Sentry-Rate-Limit-Remaining: 0              requests left in the window
    X-Sentry-Rate-Limit-Reset: 1772366460         epoch second when the window resets
    X-Sentry-Rate-Limit-ConcurrentLimit: 25
    X-Sentry-Rate-Limit-ConcurrentRemaining: 24

A 429 carries a bare JSON string body and often no ``Retry-After``, so the reset time is
the only reliable signal of when to try again.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

LIMIT = "X-Sentry-Rate-Limit-Limit"
REMAINING = "X-Sentry-Rate-Limit-Remaining"
RESET = "X-Sentry-Rate-Limit-Reset"
CONCURRENT_LIMIT = "X-Sentry-Rate-Limit-ConcurrentLimit"
CONCURRENT_REMAINING = "X-Sentry-Rate-Limit-ConcurrentRemaining"


@dataclass(frozen=True)
class RateLimitInfo:
    """The rate-limit headers of one response; a missing or unreadable header is None."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    concurrent_limit: int | None = None
    concurrent_remaining: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """Read the headers (case-insensitive mapping); None when Sentry sent none of them."""
        values = {
            key: _number(headers.get(key))
            for key in (LIMIT, REMAINING, RESET, CONCURRENT_LIMIT, CONCURRENT_REMAINING)
        }
        if all(value is None for value in values.values()):
            return None
        return cls(
            limit=_as_int(values[LIMIT]),
            remaining=_as_int(values[REMAINING]),
            reset=values[RESET],
            concurrent_limit=_as_int(values[CONCURRENT_LIMIT]),
            concurrent_remaining=_as_int(values[CONCURRENT_REMAINING]),
        )

    def seconds_until_reset(self, now: datetime) -> float | None:
        """Seconds from ``now`` until the window resets (never negative), None if unknown."""
        if self.reset is None:
            return None
        return max(0.0, self.reset - now.timestamp())

    def exhausted(self) -> bool:
        """True when the window has no requests left."""
        return self.remaining is not None and self.remaining <= 0


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw.strip())
    except ValueError:
        return None


def _as_int(value: float | None) -> int | None:
    return int(value) if value is not None else None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header in seconds (the delta form Sentry uses), or None."""
    value = _number(headers.get("Retry-After"))
    return max(0.0, value) if value is not None else None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits base * 2**(n-1), capped, +-jitter.

    ``random`` is injectable so tests can pin the jitter.
    """

    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.25
    random: Callable[[], float] = _random.random

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raw = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        # Jitter spreads replicas that failed together so they do not retry in lockstep.
        factor = 1.0 + self.jitter * (2.0 * self.random() - 1.0)
        return max(0.0, raw * factor)
