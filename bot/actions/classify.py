"""Is this failure text a credential failure? A pure, table-tested classifier.

Seed ``004_*`` bug 2: the backup worker only knew PostgreSQL's auth strings, so MongoDB
and Redis credential failures were bucketed as transient ("briefly unreachable, we'll
retry"). A credential failure never heals on retry and must page ops.

Order matters: a playbook's own rules first (``reclassify_failures`` ``rules``), then
structured codes (SQLSTATE class 28, MongoDB code 18 / ``AuthenticationFailed``, Redis
``WRONGPASS``/``NOAUTH``, MySQL 1045, SQL Server 18456, Oracle ORA-01017, RabbitMQ
``ACCESS_REFUSED``, AWS ``InvalidAccessKeyId``/``SignatureDoesNotMatch``/``ExpiredToken``,
Kafka SASL authentication, LDAP result 49), then anchored phrases, and only then
transient markers. So the seed's real mongo string, which carries both ``unable to
authenticate`` and ``socket was unexpectedly closed: EOF``, is auth; an ``EOF`` or
``57P01`` alone stays transient.

Linear time: every built-in pattern is written without nested or adjacent unbounded
repeats, and a playbook's pattern is refused at load (:func:`check_rule_pattern`) if it
uses a repeated group, a backreference or a lookaround (the constructs that make a
backtracking engine super-linear; RE2 rejects the last two as well). The text is
clipped to :data:`MAX_TEXT` characters before matching: real driver messages put their
code in the first line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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


MAX_TEXT = 4_096
MAX_PATTERN = 300

# A quantifier right after a group, a backreference, a lookaround, or a possessive /
# atomic construct: refused in playbook patterns (see module docstring).
_UNSAFE = re.compile(
    r"\)(?:[*+?]|\{)"  # a repeated group: (a+)+ and friends
    r"|\\[1-9]|\(\?P="  # backreferences
    r"|\(\?<?[=!]"  # lookahead / lookbehind
    r"|\(\?>"  # atomic group
)


def check_rule_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid, linear-safe playbook pattern; else raise
    ``ValueError`` saying why (used when the playbook loads)."""
    if not pattern or len(pattern) > MAX_PATTERN:
        raise ValueError(f"a rule pattern must be 1..{MAX_PATTERN} characters")
    if _UNSAFE.search(pattern):
        raise ValueError(
            f"rule pattern {pattern!r} uses a repeated group, a backreference or a "
            "lookaround; write it without them (they can make matching super-linear)"
        )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"rule pattern {pattern!r} is not a valid regex: {exc}") from exc
    return pattern


@dataclass(frozen=True)
class ExtraRule:
    """A playbook's own classification rule (checked before the built-in ones)."""

    pattern: str
    kind: Literal["auth", "transient"]
    code: str | None = None

    def compiled(self) -> _Rule:
        return _rule(self.kind, self.code, f"playbook rule {self.pattern!r}", self.pattern)


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
    # SQL Server: error 18456 "Login failed for user" (ODBC "(18456)", pymssql "(18456, ").
    _rule(
        "auth",
        "mssql:18456",
        "SQL Server login failed (18456)",
        r"\bLogin failed for user\b|(?:\(|\berror:?\s?|\bmsg\s)18456\b",
    ),
    # Oracle: ORA-01017 invalid username/password (or "invalid credential") and its kin.
    _rule("auth", "oracle:ORA-01017", "Oracle invalid credentials", r"\bORA-01017\b"),
    _rule("auth", "oracle:ORA-28000", "Oracle account locked", r"\bORA-28000\b"),
    _rule("auth", "oracle:ORA-01005", "Oracle null password", r"\bORA-01005\b"),
    # RabbitMQ: AMQP reply 403 ACCESS_REFUSED (login refused or vhost/resource refused).
    _rule(
        "auth",
        "rabbitmq:ACCESS_REFUSED",
        "RabbitMQ ACCESS_REFUSED",
        r"\bACCESS[_-]REFUSED\b",
    ),
    # AWS: the error codes in "An error occurred (<Code>) when calling ...".
    _rule(
        "auth",
        "aws:InvalidAccessKeyId",
        "AWS unknown access key",
        r"\bInvalidAccessKeyId\b|\bInvalidClientTokenId\b|\bUnrecognizedClientException\b",
    ),
    _rule(
        "auth",
        "aws:SignatureDoesNotMatch",
        "AWS signature mismatch (wrong secret key)",
        r"\bSignatureDoesNotMatch\b",
    ),
    _rule(
        "auth",
        "aws:ExpiredToken",
        "AWS expired session token",
        r"\bExpiredToken(?:Exception)?\b|\bThe provided token has expired\b",
    ),
    # Kafka: Java SaslAuthenticationException, librdkafka _AUTHENTICATION, kafkajs.
    _rule(
        "auth",
        "kafka:SASL",
        "Kafka SASL authentication failure",
        r"\bSaslAuthenticationException\b|\bSASL authentication error\b"
        r"|\bcode=_AUTHENTICATION\b|\bKafkaJSSASLAuthenticationError\b"
        r"|\bSASL \w+(?: \w+)? authentication failed\b",
    ),
    # LDAP: result code 49 invalidCredentials, in each library's spelling.
    _rule(
        "auth",
        "ldap:49",
        "LDAP invalid credentials (49)",
        r"\bLDAP: error code 49\b|\bINVALID_CREDENTIALS\b|\bLDAPInvalidCredentialsResult\b"
        r"|\binvalidCredentials\b|\bInvalid credentials \(49\)"
        r"|'result': 49\b",
    ),
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
    _rule(
        "transient",
        None,
        "server busy or unavailable",
        r"\bCONNECTION_FORCED\b|\bServiceUnavailable\b|\bSlowDown\b|\bThrottl\w*"
        r"|\bRate exceeded\b|\bnot currently available\b|\bBusy\b|\bUnavailable\b"
        r"|\bCan't contact LDAP server\b|\bSERVER_DOWN\b"
        r"|\bNOT_ENOUGH_REPLICAS\b|\bNotEnoughReplicas\w*"
        r"|\bNot enough in-sync replicas\b|\b_ALL_BROKERS_DOWN\b|\b_TRANSPORT\b"
        r"|\bORA-12541\b|\bORA-03113\b|\bORA-12170\b|\bTNS:",
    ),
)

_RULES = _STRUCTURED + _PHRASES + _TRANSIENT


def compile_rules(extra: Sequence[ExtraRule]) -> tuple[_Rule, ...]:
    """A playbook's rules ahead of the built-in ones, compiled once."""
    return tuple(r.compiled() for r in extra) + _RULES


def classify_failure(text: str | None, rules: Sequence[_Rule] | None = None) -> Classification:
    """Classify failure text as ``auth``, ``transient`` or ``unknown``.

    Deterministic and pure: the first matching rule in priority order wins (a playbook's
    own rules from :func:`compile_rules`, structured codes, anchored auth phrases, then
    transient markers). Empty text is unknown. Only the first :data:`MAX_TEXT`
    characters are read.
    """
    if not text:
        return Classification("unknown", None, "no error text")
    text = text[:MAX_TEXT]
    for rule in _RULES if rules is None else rules:
        if rule.pattern.search(text):
            return Classification(rule.kind, rule.code, rule.reason)
    return Classification("unknown", None, "no rule matched")
