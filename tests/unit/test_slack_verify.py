"""Slack request signatures, checked against Slack's own verifier and its test vector.

The vector (secret, timestamp, body, signature) is the worked example of Slack's
"Verifying requests from Slack" page, as used by slackapi/python-slack-sdk
``tests/slack_sdk/signature/test_signature_verifier.py``; the 5-minute window (either
way) follows ``slack_sdk/signature/__init__.py`` ``SignatureVerifier.is_valid``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import RequestRejected
from bot.interfaces.http.slack_verify import slack_signature, verify_slack_request

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TS = "1531420618"
BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
AT = datetime.fromtimestamp(int(TS), tz=UTC)


def test_signature_matches_slacks_documented_example() -> None:
    assert slack_signature(SECRET, TS, BODY) == SIG
    verify_slack_request(SECRET, TS, SIG, BODY, AT)


@pytest.mark.parametrize("offset", [299, 300, -300])
def test_inside_five_minutes_either_way_is_accepted(offset: int) -> None:
    verify_slack_request(SECRET, TS, SIG, BODY, AT + timedelta(seconds=offset))


@pytest.mark.parametrize(
    ("ts", "sig", "body", "now", "why"),
    [
        (TS, SIG, BODY, AT + timedelta(seconds=301), "stale"),
        (TS, SIG, BODY, AT - timedelta(seconds=301), "stale"),
        (TS, SIG, BODY + b"------", AT, "bad Slack signature"),
        (TS, SIG.replace("a2", "b2", 1), BODY, AT, "bad Slack signature"),
        (str(int(TS) + 1), SIG, BODY, AT, "bad Slack signature"),
        (TS, SIG.upper(), BODY, AT, "malformed"),
        (TS, "v1=" + SIG[3:], BODY, AT, "malformed"),
        (TS, "v0=abc", BODY, AT, "malformed"),
        ("1e9", SIG, BODY, AT, "malformed"),
        (" " + TS, SIG, BODY, AT, "malformed"),
        (None, SIG, BODY, AT, "missing"),
        (TS, None, BODY, AT, "missing"),
        ("", "", BODY, AT, "missing"),
    ],
)
def test_rejections(ts: str | None, sig: str | None, body: bytes, now: datetime, why: str) -> None:
    with pytest.raises(RequestRejected, match=why):
        verify_slack_request(SECRET, ts, sig, body, now)


def test_another_secret_does_not_verify() -> None:
    with pytest.raises(RequestRejected, match="bad Slack signature"):
        verify_slack_request(SECRET + "x", TS, SIG, BODY, AT)
