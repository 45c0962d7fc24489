#!/usr/bin/env bash
# Set up (idempotent) and run every check: ruff lint + format, mypy on bot/, pytest.
# PostgreSQL: TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
# With CI=true an unreachable PostgreSQL fails the run instead of skipping its tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
echo "== ruff"
.venv/bin/ruff check bot tests bench
.venv/bin/ruff format --check bot tests bench
echo "== mypy"
.venv/bin/mypy bot
echo "== pytest (PostgreSQL: ${TEST_DATABASE_URL%%\?*})"
.venv/bin/python -m pytest "$@"
