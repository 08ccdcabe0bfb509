#!/usr/bin/env bash
# Set everything up, then run the gRPC server on 127.0.0.1:50051 against the embedded gateway.
# Extra arguments go to `nvp-adapter serve` (e.g. --listen 127.0.0.1:6000, --config adapter.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/nvp-adapter serve "$@"
