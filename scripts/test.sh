#!/usr/bin/env bash
# Set up (idempotent) and run every check: ruff lint + format, mypy on bot/, pytest.
# PostgreSQL: TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
# MariaDB (target tests): TEST_MYSQL_URL (default mysql://root@127.0.0.1:3306/mysql).
# With CI=true an unreachable PostgreSQL or MariaDB fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# npm packages the tests run, each folder pinned by its package-lock.json; `npm ci` only
# when the lock file changed (or node_modules is missing):
# - tests/queues/node: the real pg-boss and graphile-worker of test_queue_packs.py;
# - tests/contract/node: Stoplight Prism and GitHub's OpenAPI description (contract tests).
if command -v npm >/dev/null 2>&1; then
  for NODE_DIR in tests/queues/node tests/contract/node; do
    if ! cmp -s "$NODE_DIR/package-lock.json" "$NODE_DIR/node_modules/.installed-lock"; then
      echo "== npm ci ($NODE_DIR)"
      (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
      cp "$NODE_DIR/package-lock.json" "$NODE_DIR/node_modules/.installed-lock"
    fi
  done
else
  echo "== npm not found: the Node-backed tests say so (and fail under CI=true)"
fi
# The console's browser test drives Debian's chromium through Playwright (no browser
# download is possible here); install it once when missing and we may (root + apt).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== installing Debian's chromium for the browser test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
export TEST_MYSQL_URL=${TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/mysql}
echo "== ruff"
.venv/bin/ruff check bot tests bench
.venv/bin/ruff format --check bot tests bench
echo "== mypy"
.venv/bin/mypy bot
echo "== pytest (PostgreSQL: ${TEST_DATABASE_URL%%\?*})"
.venv/bin/python -m pytest "$@"
