#!/usr/bin/env bash
# Run examples/node, the grpc-js client, against a live adapter: install its packages as
# package-lock.json pins them, start `nvp-adapter serve` on a free loopback port (embedded gateway),
# run the client's flow and rich-error checks, stop the adapter with SIGTERM. Exits non-zero if any
# step failed; leaves no process behind. Extra arguments go to the client.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

example=examples/node
# npm ci only when the lock file differs from the one last installed (a copy kept beside it).
installed="$example/node_modules/.installed-package-lock.json"
if ! cmp -s "$example/package-lock.json" "$installed"; then
  timeout 300 npm ci --prefix "$example" --no-audit --no-fund --loglevel=error
  cp "$example/package-lock.json" "$installed"
fi

scripts/against_adapter.sh "node example" 60 node "$example/checkout.js" "$@"
