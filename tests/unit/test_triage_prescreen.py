"""Triage made cheaper for a burst (issue #12) decides as before.

The RE2 prescreen of the text rules never hides a rule that Python's ``re`` finds (the
rules it passes are searched with ``re`` as before, so it may only skip rules that cannot
match), and shared indicators equal the ones built one by one.
"""

from __future__ import annotations

import random

import pytest

from bot.safety.linear_regex import SET_TEXT_LIMIT, RegexRefused, compile_set
from bot.triage.category import TEXT_RULES, _candidate_rules, _text_indicators
from bot.triage.models import EVIDENCE_LIMIT, Indicator, indicator

# Each rule's own words, near misses and the characters its boundaries depend on.
PIECES = [
    "union select", "UNION ALL SELECT", "' or '1'='1", "or 1=1", "; drop table", "pg_sleep(",
    "sleep( 5 )", "xp_cmdshell", "information_schema", "<script", "../../", "%2E%2E%2F",
    "brute-force", "too many failed login attempts", "credential stuffing", "account locked",
    "ddos", "syn flood", "pq:", "postgresql", "mysql", "SQLSTATE", "psycopg2", "OperationalError",
    "PrismaClientKnownRequestError", "database", "redis", "mongodb", "memcache", "timed out",
    "time out", "deadline exceeded", "ETIMEDOUT", "canceling statement", "connection reset",
    "ECONNREFUSED", "getaddrinfo", "network is unreachable", "broken pipe", "socket was closed",
    "too many clients", "pool exhausted", "deadlock detected", "lock-busy", "stuck task",
    "heartbeat", "removed from the worker pool", "orphaned worker", "OOMKilled", "out of memory",
    "env variable FOO is not set", "missing required config", "ImproperlyConfigured",
    "API_KEY is missing", "KeyError: 'DATABASE_URL'", "invalid configuration", "config invalid",
    "password authentication failed", "WRONGPASS", "28P01", "Access denied for user",
    "validation failed", "invalid email", "malformed", "BadRequest", "JSONDecodeError",
    "unexpected token < in JSON", "stripe", "card_declined", "paypal", "payment gateway",
    "twilio", "sendgrid", "cloudflare", "recaptcha", "auth0", "okta", "plaid",
    "x", "_", "1", " ", ".", "'", "=", "\n", "\t", "-", "/", "%", "(", ")", ";", "<",
]  # fmt: skip


def _reference(text: str) -> frozenset[int]:
    return frozenset(i for i, rule in enumerate(TEXT_RULES) if rule.pattern.search(text))


def _ascii_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = [rng.choice(PIECES) for _ in range(rng.randint(1, 12))]
        text = rng.choice(["", " ", "_"]).join(parts)
        if rng.random() < 0.3:
            text = text.upper() if rng.random() < 0.5 else text.swapcase()
        out.append(text)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_on_ascii_text_the_prescreen_finds_exactly_the_rules_re_finds(seed: int) -> None:
    for text in _ascii_texts(seed, 500):
        assert _candidate_rules(text) == _reference(text), text


def test_every_rule_is_exercised_by_the_corpus() -> None:
    hit = set().union(*(_reference(t) for t in _ascii_texts(0, 500)))
    assert hit == set(range(len(TEXT_RULES)))


def test_a_long_ascii_text_at_the_limit_is_still_exact() -> None:
    rng = random.Random(9)
    for _ in range(20):
        text = " ".join(rng.choice(PIECES) for _ in range(600))[:SET_TEXT_LIMIT]
        assert _candidate_rules(text) == _reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "\u017felect: Redis unavailable",  # long s folds to "s" in re, not ASCII
        "Fehler: Zeitüberschreitung, database gone",
        "éredis ddos\u212a",  # Kelvin sign folds to "k"
        "x" * (SET_TEXT_LIMIT + 1) + " redis",  # too long for the set
    ],
)
def test_other_texts_are_searched_rule_by_rule(text: str) -> None:
    assert _candidate_rules(text) == frozenset(range(len(TEXT_RULES)))


def test_indicators_equal_searching_every_rule_in_every_source() -> None:
    def reference(sources: list[tuple[str, str]]) -> list[str]:
        out = []
        for rule in TEXT_RULES:
            for source, text in sources:
                if m := rule.pattern.search(text):
                    out.append(f"{rule.name}@{source}:{m.start()}")
                    break
        return out

    def names(found: list[Indicator]) -> list[str]:
        return [f"{i.name}@{i.evidence.split(':', 1)[0]}" for i in found]

    texts = [*_ascii_texts(7, 400), "Zeitüberschreitung: redis", "\u017fql union select"]
    rng = random.Random(7)
    for _ in range(200):
        sources = [(f"s{n}", rng.choice(texts)) for n in range(rng.randint(1, 4))]
        expected = reference(sources)
        assert names(_text_indicators(sources)) == [e.rsplit(":", 1)[0] for e in expected]


def test_a_pattern_set_refuses_what_re2_refuses_and_oversized_text() -> None:
    with pytest.raises(RegexRefused):
        compile_set((r"(a)\1",))
    patterns = compile_set(("redis", "time[d ]?out"), ignore_case=True)
    assert patterns.matching("REDIS TIMEOUT") == {0, 1}
    assert patterns.matching("nothing here") == frozenset()
    with pytest.raises(ValueError, match="bytes"):
        patterns.matching("é" * SET_TEXT_LIMIT)


@pytest.mark.parametrize(
    "evidence",
    ["level=error", "tab\there\x00", "x" * EVIDENCE_LIMIT, "y" * (EVIDENCE_LIMIT + 50)],
)
def test_a_shared_indicator_equals_one_built_alone(evidence: str) -> None:
    built = Indicator(kind="severity", name="level", weight=1, effect="+1", evidence=evidence)
    shared = indicator("severity", "level", 1, "+1", evidence)
    assert shared == built and shared.model_dump() == built.model_dump()
    assert len(shared.evidence) <= EVIDENCE_LIMIT
    again = indicator("severity", "level", 1, "+1", evidence)
    assert (again is shared) == (len(evidence) <= EVIDENCE_LIMIT)  # long text not cached
