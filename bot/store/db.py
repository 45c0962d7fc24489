"""Engine, sessions and schema upgrades for the bot's state store.

``Store(url)`` is the one handle the rest of the bot gets. ``upgrade()`` runs the
Alembic migrations shipped in the package (``sentry-bot db upgrade``; the bot also
upgrades on start). URLs: ``sqlite:///path.db`` or ``postgresql://…`` (the psycopg 3
driver is selected automatically).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, create_engine

from bot.errors import StoreError
from bot.safety.redact import mask_dsn, scrub

if TYPE_CHECKING:  # alembic is imported only when the schema is upgraded
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` / ``postgresql://`` and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError; keep the message, not the password
        raise StoreError(f"invalid database URL: {scrub(str(exc), [url])}") from None
    return url


def redact_url(url: str) -> str:
    """The URL with any password hidden, for logs and ``status``."""
    # By pattern, not by SQLAlchemy's parser: it splits a password holding '@' at the
    # first '@' and would show the rest as the host.
    try:
        return mask_dsn(normalise_url(url))
    except StoreError:
        return "<invalid url>"


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class Store:
    """A handle on the state database."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        connect_args: dict[str, object] = {}
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            connect_args["check_same_thread"] = False
        try:
            self.engine: Engine = create_engine(
                self.url,
                echo=echo,
                connect_args=connect_args,
                pool_pre_ping=not self.is_sqlite,
            )
        except Exception as exc:  # a malformed port, an unknown driver option, …
            raise StoreError(f"invalid database URL: {scrub(str(exc), [self.url])}") from None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except SQLAlchemyError as exc:
                session.rollback()
                raise StoreError(f"state store error: {exc.__class__.__name__}: {exc}") from exc
            except BaseException:
                session.rollback()
                raise

    def upgrade(self, revision: str = "head") -> None:
        """Apply the shipped Alembic migrations up to ``revision``."""
        from alembic import command

        try:
            command.upgrade(self._alembic_config(), revision)
        except SQLAlchemyError as exc:
            # An unreachable server is a StoreError (clean CLI message), not a traceback.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise StoreError(
                f"cannot upgrade the state store at {redact_url(self.url)}: "
                + scrub(first, [self.url])
            ) from exc

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def _alembic_config(self) -> Config:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.engine
        return cfg

    def dispose(self) -> None:
        self.engine.dispose()
