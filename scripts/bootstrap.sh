#!/usr/bin/env bash
# Make .venv exactly what requirements/dev.txt (the lock) says and install the project into it,
# editable. Fast when nothing changed; safe to run several at once; a half-made .venv is rebuilt.
# Usage: scripts/bootstrap.sh            Then: .venv/bin/nvp-adapter serve
# PYTHON=python3.12 scripts/bootstrap.sh builds .venv with another interpreter (3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/bootstrap.py
