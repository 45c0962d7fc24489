"""Is this failure text a credential failure? A pure, table-tested classifier.

Seed ``004_*`` bug 2: the backup worker only knew PostgreSQL's auth strings, so MongoDB
and Redis credential failures were bucketed as transient ("briefly unreachable, we'll
retry"). A credential failure never heals on retry and must page ops.

Order matters: structured codes first (SQLSTATE class 28, MongoDB code 18 /
``AuthenticationFailed``, Redis ``WRONGPASS``/``NOAUTH``, MySQL 1045), then anchored
phrases, and only then transient markers. So the seed's real mongo string, which carries
both ``unable to authenticate`` and ``socket was unexpectedly closed: EOF``, is auth;
an ``EOF`` or ``57P01`` alone stays transient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["auth", "transient", "unknown"]


@dataclass(frozen=True)
class Classification:
    kind: Kind
    code: str | None
    reason: str


@dataclass(frozen=True)
class _Rule:
    kind: Kind
    code: str | None
    reason: str
    pattern: re.Pattern[str]


def _rule(kind: Kind, code: str | None, reason: str, pattern: str) -> _Rule:
    return _Rule(kind, code, reason, re.compile(pattern, re.IGNORECASE))


# Structured codes: a vendor's own machine-readable signal of a credential failure.
_STRUCTURED: tuple[_Rule, ...] = (
    # MySQL reports 1045 with SQLSTATE 28000: name the vendor code, so it goes first.
    _rule("auth", "mysql:1045", "MySQL ER_ACCESS_DENIED_ERROR", r"\b(?:error|errno)[\s:#]*1045\b"),
    # "SQLSTATE 28P01", "(SQLSTATE 28000)", "pq: ... (28P01)", "code: 28P01", bare 28P01.
    _rule("auth", "28P01", "PostgreSQL invalid_password", r"(?<![0-9A-Z])28P01(?![0-9A-Z])"),
    _rule(
        "auth",
        "28000",
        "PostgreSQL invalid_authorization_specification",
        r"(?:sqlstate|code)[\s:=\"']*28000\b|\(28000\)",
    ),
    _rule("auth", "mongo:18", "MongoDB AuthenticationFailed", r"\bAuthenticationFailed\b"),
    _rule(
        "auth",
        "mongo:18",
        "MongoDB error code 18",
        r"\bmongo.*\bcode[\s:=\"']*18\b|\bcode[\s:=\"']*18\b.*\bcodeName\b",
    ),
    _rule(
        "auth",
        "mongo:18",
        "MongoDB SASL authentication failure",
        r"\bsasl conversation error\b.*\bunable to authenticate\b"
        r"|\bunable to authenticate using mechanism\b",
    ),
    _rule("auth", "redis:WRONGPASS", "Redis WRONGPASS", r"\bWRONGPASS\b"),
    _rule("auth", "redis:NOAUTH", "Redis NOAUTH", r"\bNOAUTH\b"),
)

# Anchored phrases: the exact wording servers use, not loose words like "auth".
_PHRASES: tuple[_Rule, ...] = (
    _rule(
        "auth",
        "28P01",
        "PostgreSQL password authentication failed",
        r"\bpassword authentication failed for user\b",
    ),
    _rule("auth", "28000", "PostgreSQL pg_hba rejection", r"\bno pg_hba\.conf entry for\b"),
    _rule("auth", "mysql:1045", "MySQL access denied", r"\bAccess denied for user\b"),
    _rule(
        "auth",
        "redis:WRONGPASS",
        "Redis invalid credentials",
        r"\binvalid username-password pair\b",
    ),
)

_TRANSIENT: tuple[_Rule, ...] = (
    _rule("transient", "57P01", "PostgreSQL admin_shutdown", r"\b57P01\b|\badmin_shutdown\b"),
    _rule(
        "transient",
        "57P01",
        "PostgreSQL terminated the connection",
        r"terminating connection due to administrator command",
    ),
    _rule(
        "transient",
        None,
        "server closed the connection",
        r"server closed the connection unexpectedly|socket was unexpectedly closed",
    ),
    _rule("transient", None, "connection refused", r"\bconnection refused\b|\bECONNREFUSED\b"),
    _rule("transient", None, "connection reset", r"\bconnection reset\b|\bECONNRESET\b"),
    _rule(
        "transient",
        None,
        "timeout",
        r"\btime[d ]?out\b|\btimeout\b|\bdeadline exceeded\b|\bETIMEDOUT\b|\b57014\b",
    ),
    _rule("transient", None, "unexpected EOF", r"\bEOF\b"),
    _rule(
        "transient", None, "host unreachable", r"\bno route to host\b|\bnetwork is unreachable\b"
    ),
    _rule("transient", "53300", "too many connections", r"\b53300\b|\btoo many connections\b"),
)

_RULES = _STRUCTURED + _PHRASES + _TRANSIENT


def classify_failure(text: str | None) -> Classification:
    """Classify failure text as ``auth``, ``transient`` or ``unknown``.

    Deterministic and pure: the first matching rule in priority order wins (structured
    codes, then anchored auth phrases, then transient markers). Empty text is unknown.
    """
    if not text:
        return Classification("unknown", None, "no error text")
    for rule in _RULES:
        if rule.pattern.search(text):
            return Classification(rule.kind, rule.code, rule.reason)
    return Classification("unknown", None, "no rule matched")
