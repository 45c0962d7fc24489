"""Verification checks: named read-only queries a playbook adds to its ``verify`` block.

An action's built-in verify answers "did the rows I changed stop matching the problem?".
A runbook usually asks more (seed 001's post-deploy list): "pg_locks shows no stuck
advisory lock on 20260417, 20260402, 20260415, 314159", "the pending count drains on the
30 s cadence". A check is one such question, written by the playbook's owner:

- ``query`` is a single ``SELECT`` / ``WITH`` statement (playbook-owned, trusted text, like
  table names); the first column of the first row is the observed value (no row = null).
  Values reach it only as bind parameters: ``%(name)s`` names one of the check's own
  ``params`` or a typed parameter extracted from the event.
- every sample runs in its own ``READ ONLY`` transaction with the playbook's statement and
  lock timeouts, so a check can neither change data nor hang the verifier;
- the expectation is one of ``equals`` (one sample), ``at_most`` (one sample),
  ``decreases`` (two samples ``every_seconds`` apart, the second strictly lower, or both
  zero: nothing is left to drain), ``reaches`` (sampled every ``every_seconds`` until it
  equals the value, at most ``within_seconds``).

Time passes through the injected clock (``clock.sleep``), so a 2-minute check is tested
in microseconds. Every sample is returned for the run's journal and the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from psycopg import sql

from bot.actions.base import ParamValue
from bot.actions.target import TargetDatabase, json_safe
from bot.clock import Clock
from bot.errors import BotError
from bot.playbooks.models import VerifyCheck


@dataclass(frozen=True)
class Sample:
    """One observation of a check's query: when, and the value (JSON-safe)."""

    at: str
    value: object

    def to_json(self) -> dict[str, object]:
        return {"at": self.at, "value": self.value}


@dataclass
class CheckResult:
    """One check's verdict with every sample it took (JSON-safe, for the journal)."""

    name: str
    ok: bool
    expectation: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def summary(self) -> str:
        observed = ", ".join(_show(s.value) for s in self.samples) or "no sample"
        verdict = "ok" if self.ok else "FAILED"
        text = f"check {self.name} {verdict}: expected {self.expectation}, observed {observed}"
        return f"{text} ({self.error})" if self.error else text

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "expectation": self.expectation,
            "samples": [s.to_json() for s in self.samples],
            "error": self.error,
        }


def _show(value: object) -> str:
    return "null" if value is None else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | Decimal):
        return float(value)
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def _same(observed: object, expected: object) -> bool:
    """Equality that does not trip over Decimal vs int vs float from different drivers."""
    if observed is None or expected is None:
        return observed is None and expected is None
    a, b = _number(observed), _number(expected)
    if a is not None and b is not None and not isinstance(expected, str):
        return a == b
    return str(json_safe(observed)) == str(expected)


class CheckRunner:
    """Runs a playbook's checks on one target with the playbook's timeouts."""

    def __init__(
        self, target: TargetDatabase, clock: Clock, statement_timeout_ms: int, lock_timeout_ms: int
    ) -> None:
        self._target = target
        self._clock = clock
        self._st = statement_timeout_ms
        self._lt = lock_timeout_ms

    def _sample(self, check: VerifyCheck, binds: Mapping[str, object]) -> Sample:
        with self._target.transaction(self._st, self._lt, read_only=True) as conn:
            # Playbook-owned text (validated as one SELECT/WITH at load), never event text.
            rows = conn.fetch_all(sql.SQL(check.query), binds)
        value = next(iter(rows[0].values())) if rows and rows[0] else None
        return Sample(self._clock.now().isoformat(), json_safe(value))

    def run(self, check: VerifyCheck, extracted: Mapping[str, ParamValue]) -> CheckResult:
        """Sample ``check`` as its expectation says and judge it. A database error (or a
        timeout) is a failed check carrying the error, never an exception."""
        binds: dict[str, object] = {**extracted, **check.params}
        result = CheckResult(check.name, False, check.describe())
        try:
            if check.kind == "equals":
                result.samples.append(self._sample(check, binds))
                result.ok = _same(result.samples[0].value, check.equals)
            elif check.kind == "at_most" and check.at_most is not None:
                result.samples.append(self._sample(check, binds))
                value = _number(result.samples[0].value)
                result.ok = value is not None and value <= check.at_most
            elif check.kind == "decreases":
                first = self._sample(check, binds)
                result.samples.append(first)
                self._clock.sleep(check.every_seconds)
                second = self._sample(check, binds)
                result.samples.append(second)
                a, b = _number(first.value), _number(second.value)
                result.ok = a is not None and b is not None and (b < a or a == b == 0)
            else:
                result.ok = self._reaches(check, binds, result)
        except BotError as exc:
            result.ok, result.error = False, str(exc)[:500]
        return result

    def _reaches(
        self, check: VerifyCheck, binds: Mapping[str, object], result: CheckResult
    ) -> bool:
        start = self._clock.monotonic()
        while True:
            sample = self._sample(check, binds)
            result.samples.append(sample)
            if _same(sample.value, check.reaches):
                return True
            if self._clock.monotonic() - start + check.every_seconds > check.within_seconds:
                return False
            self._clock.sleep(check.every_seconds)


def run_checks(
    runner: CheckRunner, checks: list[VerifyCheck], extracted: Mapping[str, ParamValue]
) -> list[CheckResult]:
    """Every check, in order (all run, so the journal shows the whole picture)."""
    return [runner.run(check, extracted) for check in checks]
