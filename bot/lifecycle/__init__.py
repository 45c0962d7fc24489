"""The lifecycle after a remedy: the quiet clock, and resolving after quiet hours."""

from __future__ import annotations

from bot.lifecycle.quiet import QuietChecker, QuietReport
from bot.tracker import note

__all__ = ["QuietChecker", "QuietReport", "note"]
