#!/usr/bin/env bash
# Create .venv (once) and install nvp-adapter with its dev tools into it (idempotent).
# Usage: scripts/bootstrap.sh            Then: .venv/bin/nvp-adapter serve
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,otel]'
  touch "$stamp"
fi
