"""Root-cause category from the indicators in an issue and its latest event.

Each rule that fires adds its weight to one category; the highest total wins, ties go
by :data:`~bot.triage.models.CATEGORY_PRECEDENCE`. Text signals (a Redis error, a Stripe
error, an injection string) weigh more than where the stack trace ends, because a
timeout raised from our own code is still an infrastructure problem (seed 000, -7G),
while a stack ending in our own code with no other signal is the seed's "Code Bug".

Everything read here is untrusted text: it is only searched (bounded length), and the
evidence kept is a short one-line snippet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from bot.json_types import JsonObject
from bot.safety.linear_regex import SET_TEXT_LIMIT, compile_set
from bot.sentry.models import SentryEvent, SentryIssue
from bot.triage.models import CATEGORY_PRECEDENCE, Category, Indicator, TriageConfig, indicator

SCAN_LIMIT = 16_000  # characters of each text source searched; bounds regex cost
_I = re.IGNORECASE


@dataclass(frozen=True)
class TextRule:
    name: str
    category: Category
    weight: int
    pattern: re.Pattern[str]


def _rule(name: str, category: Category, weight: int, pattern: str) -> TextRule:
    return TextRule(name, category, weight, re.compile(pattern, _I))


C = Category
TEXT_RULES: tuple[TextRule, ...] = (
    # security: attack strings and abuse patterns (seed: "Suspicious patterns, DDoS")
    _rule(
        "sql_injection_string",
        C.SECURITY,
        5,
        r"\bunion\s+(all\s+)?select\b|'\s*or\s+'?1'?\s*=\s*'?1|\bor\s+1\s*=\s*1\b"
        r"|;\s*drop\s+table\b|\bpg_sleep\s*\(|\bsleep\s*\(\s*\d+\s*\)|\bxp_cmdshell\b"
        r"|\binformation_schema\b",
    ),
    _rule("xss_or_traversal_string", C.SECURITY, 5, r"<script\b|(\.\./){2,}|%2e%2e%2f"),
    _rule(
        "auth_brute_force",
        C.SECURITY,
        5,
        r"brute[- ]?force|too many (failed )?(login|sign-?in|authentication) attempts"
        r"|credential stuffing|account locked",
    ),
    _rule("ddos", C.SECURITY, 5, r"\bddos\b|request flood|syn flood"),
    # infrastructure: database / Redis / network / timeout / lock / worker-pool health
    _rule(
        "database_error",
        C.INFRASTRUCTURE,
        3,
        r"\bpq:|\bpostgres(ql)?\b|\bmysql\b|\bSQLSTATE\b|\bpsycopg\d?\b|OperationalError"
        r"|PrismaClient\w*Error|\bdatabase\b",
    ),
    _rule("datastore_error", C.INFRASTRUCTURE, 3, r"\bredis\b|\bmongo(db|dump)?\b|\bmemcached?\b"),
    _rule(
        "timeout",
        C.INFRASTRUCTURE,
        3,
        r"time[d ]?out|deadline exceeded|ETIMEDOUT|canceling statement",
    ),
    _rule(
        "network_error",
        C.INFRASTRUCTURE,
        3,
        r"connection (refused|reset|closed|terminated)|ECONNREFUSED|ECONNRESET|EHOSTUNREACH"
        r"|ENOTFOUND|getaddrinfo|network (is )?unreachable|broken pipe|socket .*closed",
    ),
    _rule(
        "pool_or_lock",
        C.INFRASTRUCTURE,
        3,
        r"too many (clients|connections)|pool (exhausted|timeout)|deadlock detected"
        r"|lock timeout|could not obtain lock|advisory lock|lock[- ]busy",
    ),
    _rule(
        "worker_pool_health",
        C.INFRASTRUCTURE,
        3,
        r"stuck tasks?|heartbeat|removed from (the )?(worker )?pool|orphaned (task|worker)"
        r"|OOMKilled|out of memory",
    ),
    # configuration: missing env vars, wrong settings, rejected credentials
    _rule(
        "missing_setting",
        C.CONFIGURATION,
        4,
        r"(environment|env) var(iable)?s?\b.{0,60}\b(not set|missing|undefined|required|empty)"
        r"|missing (required )?(env|environment|config(uration)?)\b|ImproperlyConfigured"
        r"|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+ (is )?(not set|missing|undefined|required)"
        r"|KeyError: '[A-Z][A-Z0-9]*_[A-Z0-9_]+'",
    ),
    _rule(
        "invalid_setting",
        C.CONFIGURATION,
        3,
        r"invalid (setting|configuration|config)|config(uration)? (error|invalid)",
    ),
    # weaker than the datastore itself: a rejected password may be a wrong setting, but
    # seed 004's were a data store that lost its users (see tests for the decision)
    _rule(
        "credentials_rejected",
        C.CONFIGURATION,
        2,
        r"password authentication failed|WRONGPASS|NOAUTH|invalid username-password"
        r"|unable to authenticate|AuthenticationFailed|\b28P01\b|Access denied for user",
    ),
    # user input: validation, malformed data
    _rule(
        "validation_error",
        C.USER_INPUT,
        3,
        r"validation (error|failed)|ValidationError|invalid (input|payload|request body|email"
        r"|format|parameter|argument)|malformed|BadRequest|unprocessable entity"
        r"|JSONDecodeError|unexpected token .{0,20} in JSON",
    ),
    # external APIs: named third parties (seed: "Stripe, payment gateway errors")
    _rule(
        "third_party_api",
        C.EXTERNAL_API,
        4,
        r"\bstripe\w*|card_declined|\bpaypal\b|braintree|\badyen\b|payment gateway|\btwilio\b"
        r"|sendgrid|mailgun|turnstile|\bcloudflare\b|recaptcha|\bauth0\b|\bokta\b|\bplaid\b",
    ),
)

# All text rules in one RE2 pass: a text where none of them occurs (most of them) costs
# one scan instead of one per rule. Only a prescreen: the rules that may occur are
# searched with Python's ``re`` as before, so matches and evidence are unchanged. On
# ASCII text RE2 and ``re`` agree on every construct used above (``\b``, ``\w``, ``\d``
# and case folding differ only beyond ASCII), so a text that is not ASCII, or too long
# for the set, is searched rule by rule (tests/unit/test_triage_prescreen.py).
_RULE_SET = compile_set(tuple(r.pattern.pattern for r in TEXT_RULES), ignore_case=True)
_ALL_RULES = frozenset(range(len(TEXT_RULES)))


def _candidate_rules(text: str) -> frozenset[int]:
    """Indexes of the text rules that may match ``text`` (a superset of those that do)."""
    if text.isascii() and len(text) <= SET_TEXT_LIMIT:
        return _RULE_SET.matching(text)
    return _ALL_RULES


_URL = re.compile(r"https?://([A-Za-z0-9.-]+)", _I)
_HTTP_5XX = re.compile(r"\b(50[0-4])\b")
_CLIENT_4XX = {"400", "404", "405", "409", "413", "415", "422"}


def _request(event: SentryEvent | None) -> JsonObject:
    if event is None:
        return {}
    for entry in event.entries:
        if entry.get("type") == "request" and isinstance(entry.get("data"), dict):
            return dict(entry["data"])
    return {}


def text_sources(issue: SentryIssue, event: SentryEvent | None) -> list[tuple[str, str]]:
    """(source, text) pairs searched for indicators, each bounded to :data:`SCAN_LIMIT`."""
    meta_type = issue.metadata.get("type")
    sources = [
        ("title", issue.title),
        ("message", issue.message),
        ("culprit", issue.culprit or ""),
        ("type", meta_type if isinstance(meta_type, str) else ""),
    ]
    if event is not None:
        sources.append(("event", event.text()))
        request = _request(event)
        for key in ("url", "query_string", "data"):
            value = request.get(key)
            if value:
                sources.append((f"request.{key}", str(value)))
    return [(name, text[:SCAN_LIMIT]) for name, text in sources if text]


def tag(issue: SentryIssue, event: SentryEvent | None, key: str) -> str | None:
    """A tag value from the issue's tags, else the event's."""
    value = issue.tags.get(key)
    if value:
        return value
    return event.tag(key) if event is not None else None


def _around(text: str, m: re.Match[str], pad: int = 40) -> str:
    start, end = max(0, m.start() - pad), min(len(text), m.end() + pad)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def _text_indicators(sources: list[tuple[str, str]]) -> list[Indicator]:
    found: list[Indicator] = []
    candidates = [_candidate_rules(text) for _, text in sources]
    for index, rule in enumerate(TEXT_RULES):
        for (source, text), maybe in zip(sources, candidates, strict=True):
            m = rule.pattern.search(text) if index in maybe else None
            if m:
                found.append(
                    Indicator(
                        kind="category",
                        name=rule.name,
                        weight=rule.weight,
                        effect=f"{rule.category.value} +{rule.weight}",
                        evidence=f"{source}: {_around(text, m)}",
                    )
                )
                break  # a rule counts once, however many places repeat it
    return found


def _frame_label(frame: JsonObject) -> str:
    where = frame.get("module") or frame.get("filename") or frame.get("absPath") or "?"
    func = frame.get("function") or "?"
    return f"{func} in {where}"


_PY_STDLIB = re.compile(r"/lib/python3\.\d+/(?!site-packages/|dist-packages/)")


def _is_stdlib(frame: JsonObject) -> bool:
    """A frame in the language's standard library (Go, Python, Node), not a dependency."""
    module = str(frame.get("module") or frame.get("package") or "")
    path = str(frame.get("abs_path") or frame.get("absPath") or frame.get("filename") or "")
    go_module = frame.get("platform") == "go" or path.endswith(".go")
    if go_module and module and "." not in module.split("/", 1)[0]:
        return True  # Go: stdlib import paths have no domain (database/sql, net/http)
    if "/go/src/" in path and "/pkg/mod/" not in path:
        return True
    if _PY_STDLIB.search(path):
        return True
    return path.startswith("node:")


def _in_app(frame: JsonObject) -> bool:
    # The events API says inApp; raw SDK payloads (and replay files) say in_app.
    return bool(frame.get("in_app", frame.get("inApp", False)))


def _frame_indicators(event: SentryEvent | None) -> list[Indicator]:
    frames = event.frames() if event is not None else []
    if not frames:
        return []
    top = frames[-1]  # Sentry lists frames innermost last
    if _in_app(top):
        return [
            Indicator(
                kind="category",
                name="top_frame_in_app",
                weight=2,
                effect="code_bug +2",
                evidence=_frame_label(top),
            )
        ]
    app_frames = [f for f in frames if _in_app(f)]
    if app_frames and _is_stdlib(top):
        # The language's own library raised on behalf of our code (Go's database/sql
        # ErrTxDone after a double Commit, BEE-6C): that is misuse, a code bug, not a
        # defect in a third-party dependency.
        return [
            Indicator(
                kind="category",
                name="stdlib_misused_by_app_code",
                weight=2,
                effect="code_bug +2",
                evidence=f"{_frame_label(top)} called from {_frame_label(app_frames[-1])}",
            )
        ]
    found = [
        Indicator(
            kind="category",
            name="top_frame_in_library",
            weight=2,
            effect="dependency +2",
            evidence=_frame_label(top),
        )
    ]
    if app_frames:
        found.append(
            Indicator(
                kind="category",
                name="called_from_app_code",
                weight=1,
                effect="code_bug +1",
                evidence=_frame_label(app_frames[-1]),
            )
        )
    return found


def _status_indicators(
    issue: SentryIssue,
    event: SentryEvent | None,
    sources: list[tuple[str, str]],
    config: TriageConfig,
) -> list[Indicator]:
    found: list[Indicator] = []
    status = tag(issue, event, "http.status_code") or ""
    if status in _CLIENT_4XX:
        found.append(
            Indicator(
                kind="category",
                name="client_error_status",
                weight=2,
                effect="user_input +2",
                evidence=f"http.status_code={status}",
            )
        )
    internal = tuple(h.lower() for h in config.internal_hosts)
    own_host = (urlsplit(str(_request(event).get("url") or "")).hostname or "").lower()
    for source, text in sources:
        if source.startswith("request."):
            continue  # our own endpoint's URL is not an upstream host
        status_m = _HTTP_5XX.search(text) or (_HTTP_5XX.search(status) if status else None)
        if status_m is None:
            continue
        for host_m in _URL.finditer(text):
            host = host_m.group(1).lower()
            if host == own_host or any(host == h or host.endswith("." + h) for h in internal):
                continue
            return [
                *found,
                Indicator(
                    kind="category",
                    name="upstream_5xx",
                    weight=3,
                    effect="external_api +3",
                    evidence=f"{source}: HTTP {status_m.group(1)} from {host}",
                ),
            ]
    return found


def _category_of(indicator: Indicator) -> Category:
    # every category indicator's effect reads "<category> +<weight>"
    return Category(indicator.effect.split(" ", 1)[0])


def classify(
    issue: SentryIssue, event: SentryEvent | None, config: TriageConfig
) -> tuple[Category, dict[Category, int], list[Indicator]]:
    """The root-cause category, the score of every category, and the indicators that fired.

    With no indicator at all the answer is ``code_bug`` with a zero-weight
    ``no_specific_signal`` indicator: an unexplained error is ours until shown otherwise.
    """
    sources = text_sources(issue, event)
    indicators = [
        *_text_indicators(sources),
        *_frame_indicators(event),
        *_status_indicators(issue, event, sources, config),
    ]
    scores = dict.fromkeys(Category, 0)
    for ind in indicators:
        scores[_category_of(ind)] += ind.weight
    best = max(CATEGORY_PRECEDENCE, key=lambda c: (scores[c], -CATEGORY_PRECEDENCE.index(c)))
    if scores[best] == 0:
        indicators.append(
            indicator(
                "category",
                "no_specific_signal",
                0,
                "code_bug (default)",
                "no stack trace or known error text",
            )
        )
        return Category.CODE_BUG, scores, indicators
    return best, scores, indicators
