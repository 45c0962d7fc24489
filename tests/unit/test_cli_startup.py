"""``sentry-bot --help`` stays fast: the command bodies (and with them SQLAlchemy, httpx
and the database drivers) are imported only when a command runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    from typer.testing import CliRunner
    from bot.interfaces.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "cycle" in result.output
    heavy = ("sqlalchemy", "sqlmodel", "httpx", "psycopg", "alembic", "uvicorn", "apscheduler")
    print(" ".join(m for m in heavy if m in sys.modules))
    """
)


def test_help_imports_no_database_layer_or_http_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "", f"--help imported: {out.stdout.strip()}"
