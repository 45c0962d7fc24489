"""Verifying that a request really comes from Slack, and honouring it only once.

Slack signs each request: ``X-Slack-Signature`` is ``v0=`` + hex HMAC-SHA256 of
``v0:{X-Slack-Request-Timestamp}:{raw body}`` keyed with the app's signing secret.
This follows Slack's own verifier (slackapi/python-slack-sdk
``slack_sdk/signature/__init__.py``, ``SignatureVerifier.is_valid``): a request whose
timestamp is more than 5 minutes away from now (either way) is refused, and the
signatures are compared with ``hmac.compare_digest``. Two differences, both stricter:
the HMAC is computed over the raw body bytes (the SDK decodes and re-encodes UTF-8,
which is the same for any body Slack sends), and the header must look like a v0
signature before any work is done.

A valid signature does not make a request unique: anyone who captured one can replay
it within the 5 minutes. :class:`NonceStore` remembers each honoured signature in the
bot's state store (table ``request_nonce``, primary key = the signature), so one signed
request is honoured once across every replica sharing the store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from bot.clock import Clock, ensure_utc
from bot.errors import RequestRejected, StoreError
from bot.store.db import Store
from bot.store.models import RequestNonce

VERSION = "v0"
MAX_AGE_S = 5 * 60
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_NONCE_T = RequestNonce.__table__  # type: ignore[attr-defined]


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` with ``secret``."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify_slack_request(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: datetime
) -> None:
    """Raise :class:`RequestRejected` unless the request is signed with ``secret`` and
    its timestamp is within 5 minutes of ``now``."""
    if not timestamp or not signature:
        raise RequestRejected("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not _TIMESTAMP.match(timestamp) or not _SIGNATURE.match(signature):
        raise RequestRejected("malformed Slack signature headers")
    if abs(ensure_utc(now).timestamp() - int(timestamp)) > MAX_AGE_S:
        raise RequestRejected("stale Slack request (timestamp more than 5 minutes off)")
    expected = slack_signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise RequestRejected("bad Slack signature")


class NonceStore:
    """One-time use of a key (e.g. a request signature), shared through the state store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def use_once(self, key: str, ttl: timedelta = timedelta(seconds=2 * MAX_AGE_S)) -> bool:
        """True the first time ``key`` is used (by any replica), False afterwards.

        ``INSERT … ON CONFLICT DO NOTHING``: of two replicas racing on one key, the
        primary key lets exactly one insert. Keys past their expiry are purged first
        (by then the timestamp check refuses the request anyway).
        """
        now = ensure_utc(self.clock.now())
        with self.store.session() as session:
            dialect = session.get_bind().dialect.name
            if dialect not in ("postgresql", "sqlite"):
                raise StoreError(f"nonce store: unsupported database dialect {dialect!r}")
            session.execute(delete(_NONCE_T).where(col(RequestNonce.expires_at) < now))
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = (
                insert(_NONCE_T)
                .values(key=key[:128], expires_at=now + ttl)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(_NONCE_T.c.key)
            )
            return session.execute(stmt).first() is not None
