#!/usr/bin/env bash
# Static checks: stub drift, ruff (lint and format), mypy --strict (adapter, tests, scripts), buf lint.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/python scripts/generate_protos.py --check
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
if command -v buf >/dev/null 2>&1; then
  (cd proto && buf lint)
  echo "buf lint: clean"
else
  echo "buf not found: buf lint skipped (CI installs it)"
fi
