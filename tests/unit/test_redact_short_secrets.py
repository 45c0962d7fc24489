"""Secret scrubbing must not replace a very short token inside other words (issue #8)."""

from __future__ import annotations

import pytest

from bot.adapters.selfmon import REDACTED, SecretScrubber
from bot.safety.redact import redact, secret_pattern


@pytest.mark.parametrize(
    ("secrets", "text", "expected"),
    [
        (["ab"], "table ab cab", "table *** cab"),  # short: only standing alone
        (["ab"], "token=ab;", "token=***;"),
        (["t0k"], "Bearer t0k", "Bearer ***"),
        (["t0k"], "t0kens", "t0kens"),
        (["x" * 20], "pre" + "x" * 20 + "post", "pre***post"),  # long: everywhere
        (["secret-token-1234", "ab"], "secret-token-1234 ab", "*** ***"),
        ([], "plain", "plain"),
    ],
)
def test_redact_short_secrets_only_as_whole_words(
    secrets: list[str], text: str, expected: str
) -> None:
    assert redact(text, secret_pattern(secrets), "***") == expected


def test_scrubber_keeps_words_that_contain_a_short_password() -> None:
    scrub = SecretScrubber(["postgresql://bot:pw12@db/app"])
    text = "connect postgresql://bot:pw12@db/app failed; pw12 leaked; upw12x is a word"
    out = scrub.scrub_text(text)
    assert "pw12 " not in out and "bot:pw12" not in out
    assert "upw12x" in out and out.count(REDACTED) == 2
