"""Untrusted text from Sentry, normalised once at the boundary.

Anyone who can send an event to Sentry controls an issue's title, culprit, metadata and
tags. Before any of it reaches the bot's models:

- NUL (PostgreSQL ``text`` cannot hold it) and lone surrogates (not encodable as UTF-8:
  pydantic, JSON and every database driver refuse them) are removed from every string;
  when anything was removed, the original item is kept **as escaped ASCII JSON**
  (``\\u0000``, ``\\ud800``) in ``rawEscaped``, so nothing is lost and nothing breaks;
- identifiers that land in bounded columns are bounded without losing the issue:
  a short id longer than :data:`SHORT_ID_LIMIT` keeps its start plus a hash suffix, so
  two long ids stay distinct.

Bidirectional controls (U+202E "right-to-left override" and friends) are kept in the
data but neutralised wherever text is *shown* (Slack, PR comments, reports) with
:func:`neutralise_bidi`, so a title cannot visually reorder the text around it.
"""

from __future__ import annotations

import hashlib
import json
import re

from bot.json_types import JsonObject, JsonValue

SHORT_ID_LIMIT = 64
RAW_ESCAPED_LIMIT = 65_536

# NUL, and UTF-16 surrogates (only ever "lone" inside a Python str).
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
# Explicit directional embeddings, overrides, isolates and marks (Unicode Bidi_Control).
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """``text`` without NUL and lone surrogates (everything else kept)."""
    return _UNSAFE.sub("", text)


def clean_tree(value: JsonValue) -> tuple[JsonValue, bool]:
    """``value`` (parsed JSON) with :func:`clean` applied to every string, key included.

    Returns the cleaned value and whether anything changed.
    """
    if isinstance(value, str):
        cleaned = clean(value)
        return cleaned, cleaned != value
    if isinstance(value, list):
        changed = False
        out_list = []
        for item in value:
            new, did = clean_tree(item)
            out_list.append(new)
            changed = changed or did
        return out_list, changed
    if isinstance(value, dict):
        changed = False
        out_dict: dict[object, JsonValue] = {}
        for key, item in value.items():
            new_key, did_key = clean_tree(key) if isinstance(key, str) else (key, False)
            new, did = clean_tree(item)
            out_dict[new_key] = new
            changed = changed or did or did_key
        return out_dict, changed
    return value, False


def escaped_json(value: JsonValue, limit: int = RAW_ESCAPED_LIMIT) -> str:
    """``value`` as ASCII-only JSON (NUL and surrogates as ``\\u`` escapes), bounded."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "~"


def bound_short_id(short_id: str, limit: int = SHORT_ID_LIMIT) -> str:
    """A short id that fits ``limit`` characters; longer ones keep a distinguishing hash."""
    if len(short_id) <= limit:
        return short_id
    digest = hashlib.sha256(short_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{short_id[: limit - 13]}~{digest}"


def neutralise_bidi(text: str) -> str:
    """``text`` with bidirectional controls shown as ``[U+202E]`` instead of obeyed."""
    return _BIDI.sub(lambda m: f"[U+{ord(m.group(0)):04X}]", text)


def normalise_item(data: JsonValue) -> JsonValue:
    """A Sentry JSON object (issue or event) ready for validation.

    Strings are cleaned; if anything had to be removed, the original goes to
    ``rawEscaped`` as escaped JSON. The short id is bounded. Non-dict input is returned
    unchanged (validation reports it).
    """
    if not isinstance(data, dict):
        return data
    cleaned: JsonObject = data
    # One C-speed pass finds out whether a (slow) walk is needed at all.
    dumped = json.dumps(data, ensure_ascii=False, default=str)
    if "\\u0000" in dumped or _UNSAFE.search(dumped):
        walked, _changed = clean_tree(data)
        assert isinstance(walked, dict)
        cleaned = {**walked, "rawEscaped": escaped_json(data)}
    short = cleaned.get("shortId")
    if isinstance(short, str) and len(short) > SHORT_ID_LIMIT:
        cleaned = {**cleaned, "shortId": bound_short_id(short)}
        cleaned.setdefault("rawEscaped", escaped_json(data))
    return cleaned
