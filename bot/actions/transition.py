"""The catalog-aware state transition behind ``requeue_stuck_tasks`` and ``fail_orphaned_tasks``.

A transition moves the rows of one table that match a condition (a running status, a
staleness test, a scope) to new values, in bounded batches, inside the caller's ONE
transaction. What it promises:

- **rows by primary key**: read from the catalog, so partitioned tables (pg-boss's
  ``pgboss.job``, where ``ctid`` repeats across partitions) and composite keys work; the
  before-image names each changed row exactly once;
- **values in the column's own type**: every playbook value travels as a text bind and is
  cast to the column's catalog type (enum, domain, jsonb, timestamp, integer);
- **``set`` any number of columns**: ``value`` (a scalar, or ``{value: ...}`` for JSON),
  ``null`` (refused when the catalog says NOT NULL: seed 004's bug stays impossible),
  ``{now: true}``, ``{increment: n}``, ``{copy: other_column}``; a separate
  ``dead_letter_set`` for rows past their cap; the cap is a constant or a per-row column;
- **or the queue's own SQL function** (``call``), once per locked candidate;
- **companion updates** (a queue-level lock row) in the same statement, bounded: the
  companion is found by its own primary key from a column of each changed row, so at most
  one companion row per changed row;
- **compare-and-set**: candidates are locked with the dialect's ``SKIP LOCKED`` clause and
  the condition is re-checked in the UPDATE's own WHERE;
- **preview ≡ execute**: :func:`preview` runs exactly :func:`execute`'s statements inside a
  savepoint that is always rolled back, so a preview reports what the database did (or
  the database's own error), never a separate estimate.

The engine-specific parts go through :class:`bot.actions.dialect.SqlDialect`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from psycopg import sql

from bot.actions.base import Limits, Outcome, Preview
from bot.actions.dialect import Table, table_of
from bot.actions.port import fetch_each
from bot.actions.target import Binds, Params, Row, TargetConnection, ident, json_safe
from bot.actions.transition_spec import (
    DEAD_FLAG,
    Assign,
    CallSpec,
    CompanionSpec,
    TransitionSpec,
    parse_assign,
    parse_set,
)
from bot.actions.transition_sql import Built, Composer, Portable, key_alias
from bot.actions.transition_verify import shape, still_matching, still_matching_each
from bot.errors import RemediationError, RunRefused, TooManyRows

__all__ = [
    "DEAD_FLAG",
    "Assign",
    "CallSpec",
    "CompanionSpec",
    "TransitionSpec",
    "changed_still_matching",
    "execute",
    "one_of",
    "optional_scope_filter",
    "outcome_keys",
    "parse_assign",
    "parse_set",
    "preview",
    "run_each",
    "run_each_in",
    "statement",
    "still_matching",
    "still_matching_each",
]


def statement(conn: TargetConnection, spec: TransitionSpec) -> tuple[sql.Composed, Binds]:
    """The per-batch statement :func:`execute` runs and its binds, all but ``limit``."""
    built = Composer(conn, spec).build()
    return built.query, built.binds


def one_of(
    alias: str, column: str, values: Sequence[object], binds: Binds, prefix: str
) -> sql.Composable:
    """``alias.column IN (<values as binds>)``, dialect-neutral (binds added)."""
    if not values:
        raise RemediationError(f"no values to match {column} against", column=column)
    names = [f"{prefix}_{i}" for i in range(len(values))]
    binds.update(zip(names, values, strict=True))
    return sql.SQL("{}.{} IN ({})").format(
        sql.Identifier(alias), ident(column), sql.SQL(", ").join(map(sql.Placeholder, names))
    )


def optional_scope_filter(
    alias: str, scope: Mapping[str, str], params: Params
) -> tuple[sql.Composable, Binds]:
    """Like :func:`bot.actions.target.scope_filter`, but a parameter that was not
    extracted adds no filter (a pack's optional ``queue`` narrowing)."""
    parts: list[sql.Composable] = []
    binds: Binds = {}
    for i, (column, param) in enumerate(sorted(scope.items())):
        if param not in params:
            continue
        key = f"opt_scope_{i}"
        parts.append(
            sql.SQL(" AND {}.{} = {}").format(
                sql.Identifier(alias), ident(column), sql.Placeholder(key)
            )
        )
        binds[key] = params[param]
    return sql.Composed(parts), binds


def outcome_keys(conn: TargetConnection, spec: TransitionSpec, outcome: Outcome) -> list[Row]:
    """The primary keys an outcome changed. A journaled outcome (crash recovery) may
    carry only ``ids``: they name the key when it is the single ``id_column``."""
    keys = outcome.details.get("keys")
    if isinstance(keys, list):
        return [k for k in keys if isinstance(k, dict)]
    ids = outcome.details.get("ids")
    if not isinstance(ids, list) or not ids:
        return []
    pk = table_of(conn, spec.table).primary_key
    if len(pk) == 1:
        return [{pk[0]: i} for i in ids]
    image = [b for b in outcome.before_image if all(k in b for k in pk)]
    return [{k: b[k] for k in pk} for b in image]


def changed_still_matching(
    conn: TargetConnection, runs: Sequence[tuple[TransitionSpec, Outcome]]
) -> list[tuple[int, list[object]]]:
    """For each run: how many rows its outcome changed, and which of them still satisfy
    its transition's condition (the reads sent together, see :func:`still_matching_each`).
    What an action's verify needs; its words are its own."""
    asks = [(spec, outcome_keys(conn, spec, outcome)) for spec, outcome in runs]
    stills = still_matching_each(conn, asks)
    return [(len(keys), still) for (_, keys), still in zip(asks, stills, strict=True)]


class _Shaper:
    """Turns returned rows into before-image entries (primary key, then old values).

    The column-to-field mapping is worked out once per statement, not once per row: a
    batch returns up to ``batch_size`` rows."""

    def __init__(self, built: Built) -> None:
        pk = built.table.primary_key
        self.keys = tuple((k, key_alias(i)) for i, k in enumerate(pk))
        self.olds = tuple(
            (c, f"old:{c}") for c in dict.fromkeys(built.image_columns) if c not in pk
        )
        self.seen: set[tuple[str, ...]] = set()

    def entry(self, row: Row) -> Row:
        """One returned row as its before-image entry."""
        entry: Row = {k: json_safe(row[alias]) for k, alias in self.keys}
        for c, alias in self.olds:
            entry[c] = row[alias]
        return entry

    def refuse_repeats(self, batch: Sequence[Row], spec: TransitionSpec) -> None:
        """A row changed twice means ``set`` leaves it matching the condition: every batch
        would take it again. Refuse (the caller rolls back) with the reason, rather than
        looping until max_rows."""
        before = len(self.seen)
        self.seen.update(tuple(str(b[k]) for k, _ in self.keys) for b in batch)
        if len(self.seen) != before + len(batch):
            raise RemediationError(
                f"the transition on {spec.table} leaves changed rows matching its own "
                "condition (set must move them out of the running status or the staleness "
                "test)",
                table=spec.table,
            )


@dataclass
class _Run:
    before: list[Row]
    dead: int
    companions: dict[str, list[object]]
    table: Table


class _Progress:
    """One run's statements as they go: the next statement (with its ``limit``), and
    what the rows it returned add to the before-image."""

    def __init__(self, spec: TransitionSpec, limits: Limits, built: Built) -> None:
        self.spec, self.limits, self.built = spec, limits, built
        self.shaper = _Shaper(built)
        self.before: list[Row] = []
        self.dead = 0
        self.companions: dict[str, list[object]] = {c.table: [] for c in spec.companions}
        self.done = False

    def statement(self) -> tuple[sql.Composed, Binds, int]:
        # Ask for one row more than max_rows allows: if it exists, the total is over the
        # cap and we refuse; the caller's transaction rolls back, nothing changes.
        limit = min(self.limits.batch_size, self.limits.max_rows + 1 - len(self.before))
        return self.built.query, self.built.binds | {"limit": limit}, limit

    def take(self, rows: list[Row], limit: int) -> None:
        """Add a batch's rows (raises on a refusal); ``done`` once a batch came short."""
        spec = self.spec
        self.dead += sum(1 for row in rows if row[DEAD_FLAG])
        batch = [self.shaper.entry(row) for row in rows]
        self.shaper.refuse_repeats(batch, spec)
        self.before.extend(batch)
        if rows:
            for i, comp in enumerate(spec.companions):
                found = rows[0].get(f"companion:{i}")  # an array of the companion keys
                self.companions[comp.table].extend(found if isinstance(found, list) else [])
        if len(self.before) > self.limits.max_rows:
            raise TooManyRows(
                f"more than max_rows={self.limits.max_rows} rows to change in {spec.table}",
                table=spec.table,
            )
        self.done = len(rows) < limit

    def finish(self, conn: TargetConnection) -> _Run:
        """Run the statements left one by one; the complete run."""
        while not self.done:
            query, binds, limit = self.statement()
            self.take(conn.fetch_all(query, binds), limit)
        return _Run(self.before, self.dead, self.companions, self.built.table)


def _run(conn: TargetConnection, spec: TransitionSpec, limits: Limits) -> _Run:
    composer = Composer(conn, spec)
    if not composer.d.update_returning:
        return _run_portable(conn, spec, limits, composer.build_portable())
    return _Progress(spec, limits, _built(conn, spec, composer)).finish(conn)


def run_each(conn: TargetConnection, specs: Sequence[TransitionSpec], limits: Limits) -> list[_Run]:
    """:func:`_run` for several transitions in the caller's transaction, in order, each
    one's first statement sent together (one round trip on PostgreSQL, see
    :func:`~bot.actions.port.fetch_each`); a run that needs more batches continues on
    its own after them. A run refused by ``max_rows`` or its own checks raises
    :class:`~bot.errors.RunRefused` naming it. Sent together, a statement the database
    refuses raises its own error, which names no run (the caller runs them one by one to
    find it); one after the other, any error names its run."""
    composers = [Composer(conn, spec) for spec in specs]
    if limits.batch_size <= limits.max_rows or not all(c.d.update_returning for c in composers):
        # A first statement could leave its run unfinished: the next run's statements
        # must not run before it completes (two runs of one scope would split rows a
        # single run would refuse as over max_rows). One run after the other, then.
        out: list[_Run] = []
        for n, spec in enumerate(specs):
            try:
                out.append(_run(conn, spec, limits))
            except RemediationError as exc:
                raise RunRefused(n, exc) from exc
        return out
    runs = [
        _Progress(spec, limits, _built(conn, spec, c))
        for spec, c in zip(specs, composers, strict=True)
    ]
    # batch_size > max_rows: each first statement asks for max_rows + 1 rows, so it
    # completes its run or refuses it; sent together, they run in order as one by one.
    firsts = [p.statement() for p in runs]
    answers = fetch_each(conn, [(query, binds) for query, binds, _ in firsts])
    done: list[_Run] = []
    for n, (run, (_, _, limit), rows) in enumerate(zip(runs, firsts, answers, strict=True)):
        try:
            run.take(rows, limit)
            done.append(run.finish(conn))
        except RemediationError as exc:
            raise RunRefused(n, exc) from exc
    return done


def _built(conn: TargetConnection, spec: TransitionSpec, composer: Composer) -> Built:
    """``composer.build()``, once per statement shape and transaction (``conn.memo``).

    Bind VALUES never reach the statement's text (they travel as binds), so two specs
    equal but for their bind values compose the same statement: a storm's runs of one
    playbook (:mod:`bot.pipeline.storm`) compose it once, each run with its own binds."""
    key = ("transition", shape(spec))
    found = conn.memo.get(key)
    if isinstance(found, Built):
        return replace(found, binds={**found.binds, **spec.binds})
    built = composer.build()
    conn.memo[key] = built
    return built


def _run_portable(
    conn: TargetConnection, spec: TransitionSpec, limits: Limits, p: Portable
) -> _Run:
    """:func:`_run` for engines without ``UPDATE ... RETURNING`` (see ``build_portable``)."""
    pk = p.table.primary_key
    shaper = _Shaper(Built(sql.Composed([]), p.binds, p.table, p.image_columns))
    before: list[Row] = []
    dead = 0
    while True:
        limit = min(limits.batch_size, limits.max_rows + 1 - len(before))
        rows = conn.fetch_all(sql.Composed([p.select]), p.binds | {"limit": limit})
        if len(before) + len(rows) > limits.max_rows:
            raise TooManyRows(
                f"more than max_rows={limits.max_rows} rows to change in {spec.table}",
                table=spec.table,
            )
        for flag, assignments in p.sets.items():
            group = [r for r in rows if bool(r[DEAD_FLAG]) == flag]
            if not group:
                continue
            binds = dict(p.binds)
            matches: list[sql.Composable] = []
            for n, row in enumerate(group):
                parts = []
                for i, k in enumerate(pk):
                    binds[f"pk_{n}_{i}"] = row[key_alias(i)]
                    parts.append(
                        sql.SQL("t.{} = {}").format(ident(k), sql.Placeholder(f"pk_{n}_{i}"))
                    )
                matches.append(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)))
            changed = conn.execute(
                sql.SQL("UPDATE {table} AS t SET {sets} WHERE ({keys}) AND {where}").format(
                    table=ident(spec.table),
                    sets=assignments,
                    keys=sql.SQL(" OR ").join(matches),
                    where=spec.where,
                ),
                binds,
            )
            if changed != len(group):
                raise RemediationError(
                    f"{len(group)} locked row(s) of {spec.table} selected but {changed} "
                    "updated: refusing the batch",
                    table=spec.table,
                )
        dead += sum(1 for row in rows if row[DEAD_FLAG])
        batch = [shaper.entry(row) for row in rows]
        shaper.refuse_repeats(batch, spec)
        before.extend(batch)
        if len(rows) < limit:
            break
    return _Run(before, dead, {}, p.table)


def _outcome(spec: TransitionSpec, run: _Run) -> Outcome:
    pk = run.table.primary_key
    return Outcome(
        rows_affected=len(run.before),
        before_image=run.before,
        details={
            "ids": [b.get(spec.id_column, b[pk[0]]) for b in run.before],
            "keys": [{k: b[k] for k in pk} for b in run.before],
            "changed": len(run.before) - run.dead,
            "dead_lettered": run.dead,
            "companions": run.companions,
        },
    )


def execute(conn: TargetConnection, spec: TransitionSpec, limits: Limits) -> Outcome:
    """Apply the transition to every matching row (at most ``limits.max_rows``; more
    raises :class:`TooManyRows` and the caller's transaction rolls back)."""
    return _outcome(spec, _run(conn, spec, limits))


_SAVEPOINT = "bot_preview"


def preview(
    conn: TargetConnection, spec: TransitionSpec, limits: Limits, *, verb: str, dead_verb: str
) -> Preview:
    """Run exactly :func:`execute`'s statements inside a savepoint that is always rolled
    back, and report what they did. A statement the database refuses raises its error
    (translated), so a preview can never claim what execution cannot do."""
    conn.execute(sql.SQL("SAVEPOINT {}").format(sql.Identifier(_SAVEPOINT)))
    refused = ""
    try:
        try:
            run: _Run | None = _run(conn, spec, limits)
        except TooManyRows as exc:
            run, refused = None, str(exc)
    finally:
        conn.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(_SAVEPOINT)))
        conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(_SAVEPOINT)))
    if run is None:
        return Preview(summary=f"execute would refuse: {refused}; nothing would change")
    return _previewed(spec, run, verb=verb, dead_verb=dead_verb)


def run_each_in(
    conn: TargetConnection,
    specs: Sequence[TransitionSpec],
    limits: Limits,
    *,
    verb: str,
    dead_verb: str,
) -> list[tuple[Preview, Outcome]]:
    """Run :func:`execute`'s statements for each spec in the caller's transaction (see
    :func:`run_each`) and return what each run did twice: as the preview to journal and
    as the outcome. Storm mode (:mod:`bot.pipeline.storm`) journals the previews BEFORE
    it commits the one transaction the runs share, so a preview is the execution
    itself, proved by the database. Refusals propagate (the caller rolls back to its
    savepoint)."""
    return [
        (
            _previewed(
                spec,
                run,
                verb=verb,
                dead_verb=dead_verb,
                how="statements executed; journaled before their transaction committed",
            ),
            _outcome(spec, run),
        )
        for spec, run in zip(specs, run_each(conn, specs, limits), strict=True)
    ]


def _previewed(
    spec: TransitionSpec,
    run: _Run,
    *,
    verb: str,
    dead_verb: str,
    how: str = "statement executed and rolled back",
) -> Preview:
    outcome = _outcome(spec, run)
    details = outcome.details
    summary = f"would {verb} {details['changed']}"
    if spec.dead_when is not None:
        summary += f" and {dead_verb} {details['dead_lettered']}"
    summary += f" row(s) in {spec.table}"
    for table, rows in run.companions.items():
        summary += f", and update {len(rows)} row(s) of {table}"
    summary += f" ({how})"
    return Preview(summary=summary, rows=outcome.before_image)
