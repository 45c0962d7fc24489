"""A recording fake of the scheduler's steps (:class:`bot.interfaces.scheduler.Steps`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bot.errors import BotError


@dataclass
class RecordingSteps:
    """An in-memory :class:`Steps` for tests: records each call; ``fail`` names steps that
    raise; ``gate`` (when given) blocks every step until it is set."""

    label: str = ""
    fail: set[str] = field(default_factory=set)
    gate: threading.Event | None = None
    calls: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _call(self, name: str) -> str:
        self.started.set()
        if self.gate is not None:
            self.gate.wait()
        with self._cond:
            self.calls.append(name)
            self._cond.notify_all()
        if name in self.fail:
            raise BotError(f"{name} failed on purpose")
        return f"{self.label} {name} done".strip()

    def count(self, name: str | None = None) -> int:
        with self._cond:
            return len([c for c in self.calls if name is None or c == name])

    def wait_for(self, n: int, name: str | None = None, timeout: float = 10.0) -> bool:
        """Block until ``n`` calls (of ``name``) were recorded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len([c for c in self.calls if name is None or c == name]) >= n, timeout
            )

    def poll(self) -> str:
        return self._call("poll")

    def lifecycle(self) -> str:
        return self._call("lifecycle")

    def fixlinks(self) -> str:
        return self._call("fixlinks")

    def outbox(self) -> str:
        return self._call("outbox")
