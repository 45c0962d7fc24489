"""Hide secrets in text: the passwords of database DSNs (even DSNs no parser accepts),
and known tokens (:func:`secret_pattern`, short ones only as whole words).

Error messages from drivers and URL parsers quote the text they choke on: psycopg
answers a bad ``%``-escape in a password with ``invalid percent-encoded token:
"p%zz…"``, SQLAlchemy quotes the whole URL it could not parse. So the password is found
here by pattern, not by a parser that may refuse the DSN: the user-info of a URL
(``scheme://user:PASSWORD@``, up to the LAST ``@`` before the path, since passwords may
contain ``@``), and ``password=…`` in key/value conninfo or a query string. The raw and
the percent-decoded forms are both scrubbed from messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"

# scheme://user:password@host… — the password runs to the LAST '@' of the word (a
# malformed password may hold '@', '/', '%'): masking too much is the safe side.
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s\"']*:)(?P<pw>[^\s\"']*)@")
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&]*)", re.I)


def dsn_passwords(dsn: str) -> list[str]:
    """Every form of the password(s) in ``dsn`` (raw and percent-decoded), longest first."""
    found: set[str] = set()
    for m in _URL_USERINFO.finditer(dsn):
        found.add(m.group("pw"))
    for m in _KV_PASSWORD.finditer(dsn):
        found.add(m.group("pw").strip("'"))
    out = set()
    for pw in found:
        if pw:
            out.add(pw)
            out.add(unquote(pw, errors="replace"))
            out.add(unquote(pw, errors="ignore"))
            # A parser that split the password at an '@' or ':' quotes the pieces.
            out.update(re.split(r"[@:/]", pw))
    return sorted((p for p in out if len(p) >= 4), key=len, reverse=True)


def mask_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***`` (works on malformed DSNs too)."""
    masked = _URL_USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@", dsn)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}", masked)


def scrub(text: str, dsns: Iterable[str] = ()) -> str:
    """``text`` without the passwords of ``dsns`` (every form) and of any DSN inside it."""
    for dsn in dsns:
        for pw in dsn_passwords(dsn):
            text = text.replace(pw, MASK)
    return mask_dsn(text)


# -- known secrets (tokens) inside free text -------------------------------------------
# A long secret is replaced wherever it appears. A *short* one (fewer than
# SHORT_SECRET characters: a test token, a two-letter password) only where it stands
# alone, never inside a longer word: otherwise a token ``ab`` would turn ``table`` into
# ``t[redacted]le`` and every message would become unreadable.

SHORT_SECRET = 12
_WORD = r"[A-Za-z0-9_]"


def secret_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """A regex matching any of ``secrets`` (longest first); None when there are none."""
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not ordered:
        return None
    parts = [
        re.escape(s) if len(s) >= SHORT_SECRET else rf"(?<!{_WORD}){re.escape(s)}(?!{_WORD})"
        for s in ordered
    ]
    return re.compile("|".join(parts))


def redact(text: str, pattern: re.Pattern[str] | None, replacement: str) -> str:
    """``text`` with every match of ``pattern`` replaced."""
    return pattern.sub(replacement, text) if pattern is not None else text
