"""Who is using the console: ``BOT_CONSOLE_TOKEN`` as a Bearer token, or a signed cookie.

- ``Authorization: Bearer <token>`` (scripts, curl): compared in constant time; the
  user is ``api`` (a Bearer request carries no ambient credential, so it needs no CSRF
  token, but it may only approve if ``api`` is on ``BOT_APPROVERS``).
- The login form takes a user name and the token and sets a session cookie:
  ``base64url(json {u, sid, exp}) "." hex HMAC-SHA256`` keyed with a key derived from
  the token (changing the token logs everyone out), ``HttpOnly``, ``SameSite=Strict``,
  ``Secure`` when served over https, expiring after :data:`SESSION_TTL`.
- CSRF: every state-changing form carries ``csrf`` = HMAC(key, ``csrf:`` + session id),
  checked in constant time; a cookie without a matching form field changes nothing.
  ``SameSite=Strict`` is the second layer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from bot.clock import Clock

COOKIE = "bot_console"
SESSION_TTL = timedelta(hours=12)
API_USER = "api"
_USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """An authenticated console user. ``sid`` is None for Bearer requests (no CSRF)."""

    user: str
    sid: str | None

    @property
    def needs_csrf(self) -> bool:
        return self.sid is not None


def valid_user_name(name: str) -> bool:
    """A console user name: letters, digits and ``._@-``, at most 64 characters."""
    return bool(_USER.match(name))


class ConsoleAuth:
    """Checks tokens, issues and reads session cookies, makes and checks CSRF tokens."""

    def __init__(self, token: str, clock: Clock) -> None:
        if not token:
            raise ValueError("the console needs BOT_CONSOLE_TOKEN")
        self._token = token.encode()
        self._key = hmac.new(self._token, b"sentry-bot console session v1", hashlib.sha256).digest()
        self.clock = clock

    def token_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def bearer(self, header: str | None) -> Principal | None:
        if not header or not header.startswith("Bearer "):
            return None
        return Principal(API_USER, None) if self.token_ok(header[7:].strip()) else None

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def issue(self, user: str) -> str:
        """A session cookie value for ``user`` (checked by :func:`valid_user_name`)."""
        exp = int((self.clock.now() + SESSION_TTL).timestamp())
        body = json.dumps({"u": user, "sid": secrets.token_hex(16), "exp": exp}).encode()
        data = base64.urlsafe_b64encode(body).rstrip(b"=")
        return f"{data.decode()}.{self._mac(data)}"

    def session(self, cookie: str | None) -> Principal | None:
        """The principal of a valid, unexpired cookie, else None."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1024:
            return None
        data, mac = cookie.split(".")
        if not hmac.compare_digest(self._mac(data.encode()), mac):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
            user, sid, exp = str(body["u"]), str(body["sid"]), int(body["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        if exp <= self.clock.now().timestamp() or not valid_user_name(user):
            return None
        return Principal(user, sid)

    def sign(self, text: str) -> str:
        """A MAC over ``text`` (e.g. a flash message carried in a redirect URL)."""
        return self._mac(f"msg:{text}".encode())[:32]

    def signed(self, text: str, mac: str) -> bool:
        return bool(text) and hmac.compare_digest(self.sign(text), mac)

    def csrf(self, principal: Principal) -> str:
        """The CSRF token of this session ('' for Bearer requests, which need none)."""
        return self._mac(f"csrf:{principal.sid}".encode()) if principal.sid else ""

    def csrf_ok(self, principal: Principal, candidate: str | None) -> bool:
        if not principal.needs_csrf:
            return True
        return bool(candidate) and hmac.compare_digest(self.csrf(principal), candidate or "")
