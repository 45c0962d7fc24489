"""Choose a target adapter from the URL scheme of ``BOT_TARGET_<NAME>_URL``.

==========================================  ======================================
``postgresql://`` / ``postgres://`` / DSN   :class:`~bot.adapters.targets.postgres.PgTarget`
``mysql://`` / ``mariadb://``               :class:`~bot.adapters.targets.mysql.MySqlTarget`
``sqlite:///path``                          :class:`~bot.adapters.targets.sqlite.SqliteTarget`
==========================================  ======================================
"""

from __future__ import annotations

from bot.actions.target import TargetDatabase
from bot.adapters.targets.mysql import MySqlTarget
from bot.adapters.targets.postgres import PgTarget
from bot.adapters.targets.sqlite import SqliteTarget
from bot.errors import ConfigError

DIALECT_OF_SCHEME = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "sqlite": "sqlite",
}


def url_dialect(url: str) -> str:
    """The dialect family a target URL names: ``postgresql``, ``mysql``, ``mariadb`` or
    ``sqlite``. A libpq key=value DSN (``host=... dbname=...``) is PostgreSQL."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        if url.startswith("sqlite:"):
            raise ConfigError("a sqlite target URL is sqlite:///relative.db or sqlite:////abs.db")
        return "postgresql"
    dialect = DIALECT_OF_SCHEME.get(scheme.lower())
    if dialect is None:
        raise ConfigError(
            f"unsupported target URL scheme {scheme!r}://; expected one of "
            + ", ".join(f"{s}://" for s in DIALECT_OF_SCHEME)
        )
    return dialect


def open_target(url: str, *, name: str) -> TargetDatabase:
    """The :class:`~bot.actions.target.TargetDatabase` for ``url`` (nothing connects yet)."""
    dialect = url_dialect(url)
    if dialect in ("mysql", "mariadb"):
        return MySqlTarget(url, name=name)
    if dialect == "sqlite":
        return SqliteTarget(url, name=name)
    return PgTarget(url, name=name)
