"""The code host, the domain side: the port and the fix-link rules. The PyGithub adapter is
:mod:`bot.adapters.github`, the fakes :mod:`bot.testing.github`."""

from __future__ import annotations

from bot.codehost.port import CodeHost, FixRef, comment_marker, mentions_short_id

__all__ = ["CodeHost", "FixRef", "comment_marker", "mentions_short_id"]
