"""``reclassify_failures``: credential failures bucketed as transient get the auth bucket.

Seed ``004_*`` bug 2: mongo ``SCRAM-SHA-256`` and redis ``WRONGPASS`` failures sat in the
``dump`` bucket ("briefly unreachable, we'll retry"), so nobody was paged. Candidate rows
(in ``from_buckets``, optionally filtered by status and scope) are read, at most
``scan_limit`` of them, and classified in Python by :func:`classify_failure` (the
playbook's own ``rules`` first, then the built-in families); only the
``auth`` ones are updated, by id, with the old bucket re-checked in the UPDATE
(compare-and-set). Plain SQL apart from the dialect's row-locking clause, text cast, list
membership and ``RETURNING``: it runs on PostgreSQL, MySQL/MariaDB and SQLite.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from psycopg import sql
from pydantic import AfterValidator, Field, model_validator

from bot.actions.base import (
    ActionSettings,
    Limits,
    Outcome,
    ParamValue,
    Preview,
    Verification,
    need_target,
)
from bot.actions.classify import ExtraRule, check_rule_pattern, classify_failure, compile_rules
from bot.actions.dialect import dialect_for
from bot.actions.target import (
    Ident,
    Row,
    TargetConnection,
    ident,
    json_row,
    json_safe,
    scope_filter,
)
from bot.errors import TooManyRows


class Rule(ActionSettings):
    """A playbook's own rule: text matching ``pattern`` (case-insensitive) is ``kind``."""

    pattern: Annotated[str, AfterValidator(check_rule_pattern)]
    kind: Literal["auth", "transient"]
    code: str | None = Field(default=None, max_length=64)


class ReclassifySettings(ActionSettings):
    table: Ident
    id_column: Ident = "id"
    text_column: Ident
    bucket_column: Ident
    from_buckets: tuple[str, ...] = Field(default=("dump", "transient"), min_length=1)
    to_bucket: str = "auth"
    status_column: Ident | None = None
    status_values: tuple[str, ...] = ()
    scope: dict[Ident, Ident] = Field(default_factory=dict)
    scan_limit: int = Field(default=1_000, ge=1, le=100_000)
    # Checked before the built-in families, in order; the first match wins.
    rules: tuple[Rule, ...] = Field(default=(), max_length=50)

    @model_validator(mode="after")
    def _moves_somewhere(self) -> Self:
        if self.to_bucket in self.from_buckets:
            raise ValueError(f"to_bucket {self.to_bucket!r} is also in from_buckets")
        return self


# Buckets and statuses are compared as text, so an enum or domain column works with the
# playbook's plain strings (a text[] bind against an enum column is a type error).
SCAN_SQL = (
    "SELECT t.{id} AS id, t.{text} AS text, {bucket_text} AS bucket FROM {table} AS t"
    " WHERE {in_from_buckets}{status}{scope}"
    " ORDER BY t.{id} LIMIT {scan_limit}"
)

# Compare-and-set: only rows still in one of the "from" buckets move. RETURNING names
# the column bare: SQLite's RETURNING cannot see the UPDATE's alias.
UPDATE_SQL = sql.SQL(
    "UPDATE {table} AS t SET {bucket} = {to_bucket} WHERE {in_ids} AND {in_from_buckets}"
)
RETURNING_SQL = sql.SQL(" RETURNING {id} AS id")

# Without UPDATE ... RETURNING (MySQL, MariaDB): the rows are still locked by the scan, so
# the ones now in the target bucket are exactly the ones this transaction moved.
MOVED_SQL = sql.SQL("SELECT t.{id} AS id FROM {table} AS t WHERE {in_ids} AND {bucket_text} = {to}")

VERIFY_SQL = sql.SQL(
    "SELECT t.{id} AS id FROM {table} AS t WHERE {in_ids} AND {bucket_text} <> {to_bucket}"
)


def _col(column: str) -> sql.Composable:
    return sql.SQL("t.{}").format(ident(column))


def _text(conn: TargetConnection, column: str) -> sql.Composable:
    """``t.column`` as text in the engine's own spelling (enums compare as labels)."""
    return dialect_for(conn).cast(_col(column), "text")


def _scan(
    conn: TargetConnection,
    s: ReclassifySettings,
    params: dict[str, ParamValue],
    *,
    lock: bool,
) -> list[Row]:
    scope_sql, binds = scope_filter("t", s.scope, params)
    status: sql.Composable = sql.SQL("")
    if s.status_column and s.status_values:
        status = sql.SQL(" AND {}").format(
            conn.dialect.member(_text(conn, s.status_column), "statuses")
        )
        binds["statuses"] = list(s.status_values)
    query = sql.SQL(SCAN_SQL + (" {skip_locked}" if lock else "")).format(
        id=ident(s.id_column),
        text=ident(s.text_column),
        table=ident(s.table),
        bucket_text=_text(conn, s.bucket_column),
        in_from_buckets=conn.dialect.member(_text(conn, s.bucket_column), "from_buckets"),
        status=status,
        scope=scope_sql,
        scan_limit=sql.Placeholder("scan_limit"),
        skip_locked=conn.dialect.skip_locked,
    )
    binds |= {"from_buckets": list(s.from_buckets), "scan_limit": s.scan_limit}
    rows = conn.fetch_all(query, binds)
    rules = compile_rules([ExtraRule(r.pattern, r.kind, r.code) for r in s.rules])
    out = []
    for row in rows:
        text = row["text"]  # cast to text by SCAN_SQL: str or NULL
        verdict = classify_failure(text if isinstance(text, str) else None, rules)
        if verdict.kind == "auth":
            out.append(row | {"code": verdict.code, "reason": verdict.reason})
    return out


class ReclassifyFailures:
    """Move authentication failures out of transient buckets into the auth bucket."""

    name: ClassVar[str] = "reclassify_failures"
    settings_model: ClassVar[type[ActionSettings]] = ReclassifySettings
    needs_target: ClassVar[bool] = True
    accepted_params: ClassVar[frozenset[str]] = frozenset()
    preview_executes: ClassVar[bool] = True

    def preview(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Preview:
        """What execute would move, proved by running it in a savepoint that is rolled
        back (error text is not included); a refused UPDATE reports the database error."""
        conn = need_target(conn)
        s = ReclassifySettings.of(settings)
        conn.execute("SAVEPOINT bot_preview")
        refused = ""
        try:
            try:
                outcome: Outcome | None = self.execute(conn, s, params, limits)
            except TooManyRows as exc:
                outcome, refused = None, str(exc)
        finally:
            conn.execute("ROLLBACK TO SAVEPOINT bot_preview")
            conn.execute("RELEASE SAVEPOINT bot_preview")
        if outcome is None:
            return Preview(summary=f"execute would refuse: {refused}; nothing would change")
        summary = (
            f"would move {outcome.rows_affected} row(s) of {s.table} to bucket "
            f"{s.to_bucket!r} (statement executed and rolled back)"
        )
        rows = [
            {"id": r[s.id_column], "bucket": r[s.bucket_column], "code": r["code"]}
            for r in outcome.before_image
        ]
        return Preview(summary=summary, rows=rows)

    def _update(
        self, conn: TargetConnection, s: ReclassifySettings, ids: list[object]
    ) -> set[object]:
        """Move ``ids`` (compare-and-set on the old bucket); return the ids that moved."""
        in_ids = conn.dialect.member(_col(s.id_column), "ids")
        update = UPDATE_SQL.format(
            table=ident(s.table),
            bucket=ident(s.bucket_column),
            to_bucket=sql.Placeholder("to_bucket"),
            in_ids=in_ids,
            in_from_buckets=conn.dialect.member(_text(conn, s.bucket_column), "from_buckets"),
        )
        binds = {"to_bucket": s.to_bucket, "ids": ids, "from_buckets": list(s.from_buckets)}
        if conn.dialect.update_returning:
            returning = RETURNING_SQL.format(id=ident(s.id_column))
            return {r["id"] for r in conn.fetch_all(sql.Composed([update, returning]), binds)}
        conn.execute(update, binds)
        moved = MOVED_SQL.format(
            id=ident(s.id_column),
            table=ident(s.table),
            in_ids=in_ids,
            bucket_text=_text(conn, s.bucket_column),
            to=sql.Placeholder("to_bucket"),
        )
        return {r["id"] for r in conn.fetch_all(moved, binds)}

    def execute(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        limits: Limits,
    ) -> Outcome:
        """Re-bucket exactly the auth rows (at most ``max_rows``; else refuse)."""
        conn = need_target(conn)
        s = ReclassifySettings.of(settings)
        found = _scan(conn, s, params, lock=True)
        if len(found) > limits.max_rows:
            raise TooManyRows(
                f"{len(found)} auth failures in {s.table} exceed max_rows={limits.max_rows}",
                table=s.table,
            )
        if not found:
            return Outcome(rows_affected=0, details={"ids": []})
        changed_ids = self._update(conn, s, [r["id"] for r in found])
        before = [
            json_row({s.id_column: r["id"], s.bucket_column: r["bucket"], "code": r["code"]})
            for r in found
            if r["id"] in changed_ids
        ]
        return Outcome(
            rows_affected=len(before),
            before_image=before,
            details={"ids": [b[s.id_column] for b in before], "to_bucket": s.to_bucket},
        )

    def verify(
        self,
        conn: TargetConnection | None,
        settings: ActionSettings,
        params: dict[str, ParamValue],
        outcome: Outcome,
    ) -> Verification:
        """OK when every re-bucketed id is in ``to_bucket``."""
        conn = need_target(conn)
        s = ReclassifySettings.of(settings)
        ids = outcome.details.get("ids", [])
        if not isinstance(ids, list) or not ids:
            return Verification(ok=True, summary="nothing was changed")
        wrong = conn.fetch_all(
            VERIFY_SQL.format(
                id=ident(s.id_column),
                table=ident(s.table),
                in_ids=conn.dialect.member(_col(s.id_column), "ids"),
                bucket_text=_text(conn, s.bucket_column),
                to_bucket=sql.Placeholder("to_bucket"),
            ),
            {"ids": ids, "to_bucket": s.to_bucket},
        )
        if wrong:
            return Verification(
                ok=False,
                summary=f"{len(wrong)} row(s) not in bucket {s.to_bucket!r}",
                details={"wrong": [json_safe(r["id"]) for r in wrong]},
            )
        return Verification(ok=True, summary=f"{len(ids)} row(s) now in bucket {s.to_bucket!r}")


ACTION = ReclassifyFailures()
