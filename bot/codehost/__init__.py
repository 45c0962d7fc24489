"""The code host (GitHub): the port, the PyGithub adapter, fakes and the fix-link service."""

from __future__ import annotations

from bot.codehost.port import CodeHost, FixRef, comment_marker, mentions_short_id

__all__ = ["CodeHost", "FixRef", "comment_marker", "mentions_short_id"]
