"""GitHub's "blocked until" kept in the bot's store, shared by steps and replicas.

GitHub warns that requests sent while rate-limited can get an integration banned, so
once GitHub says "wait until T" no step of any replica may call it before T. Each step
builds a new :class:`~bot.adapters.github.client.GitHubCodeHost`; an in-memory deadline was
forgotten by the next one. :class:`StoreBlocks` keeps one ``bot_setting`` row per scope
(``github.blocked_until.search`` …) holding the epoch second the block ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from bot.store.db import Store
from bot.store.models import Setting

_PREFIX = "github.blocked_until."


class RateLimitBlocks(Protocol):
    """Where the code host keeps "blocked until" (epoch seconds) per scope."""

    def blocked_until(self, scope: str) -> float:
        """The epoch second until which ``scope`` is blocked (0 when it is not)."""
        ...

    def block(self, scope: str, until: float, now: datetime) -> None:
        """Block ``scope`` until ``until`` (never shortens a longer block)."""
        ...


class MemoryBlocks:
    """:class:`RateLimitBlocks` for one process (the default without a store)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def blocked_until(self, scope: str) -> float:
        return self._until.get(scope, 0.0)

    def block(self, scope: str, until: float, now: datetime) -> None:
        self._until[scope] = max(until, self._until.get(scope, 0.0))


class StoreBlocks:
    """:class:`RateLimitBlocks` in the state store (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def blocked_until(self, scope: str) -> float:
        with self.store.session() as session:
            row = session.get(Setting, _PREFIX + scope)
            try:
                return float(row.value) if row is not None else 0.0
            except ValueError:
                return 0.0

    def block(self, scope: str, until: float, now: datetime) -> None:
        with self.store.session() as session:
            row = session.get(Setting, _PREFIX + scope)
            if row is None:
                session.add(Setting(key=_PREFIX + scope, value=f"{until:.3f}", updated_at=now))
                return
            try:
                current = float(row.value)
            except ValueError:
                current = 0.0
            if until > current:
                row.value, row.updated_at = f"{until:.3f}", now
