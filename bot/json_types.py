"""Raw JSON before validation: the one place the bot admits ``Any``.

Sentry, GitHub and Slack send JSON we have not validated yet; a playbook's YAML is the
same until pydantic has read it. Such values are typed with these aliases, so a reader
sees "raw, unvalidated" where ``Any`` would say nothing. Everything past validation is
a pydantic model, a dataclass or a ``Protocol``; never use these for anything else.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonValue: TypeAlias = Any
"""Any JSON value (object, array, string, number, bool, null), not yet validated."""

JsonObject: TypeAlias = dict[str, Any]
"""A JSON object (or parsed YAML mapping) not yet validated."""

JsonArray: TypeAlias = list[Any]
"""A JSON array not yet validated."""
