#!/usr/bin/env bash
# Set up (idempotent) and run one demo cycle over the bundled seed incidents:
# SQLite state in a temporary file, shadow mode, no credentials needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[demo]'
exec .venv/bin/sentry-bot demo "$@"
