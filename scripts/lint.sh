#!/usr/bin/env bash
# Static checks: stub drift, ruff (lint and format), mypy --strict (adapter, tests, scripts), hadolint
# on the Dockerfile, kubernetes-validate --strict on deploy/kubernetes/, buf lint and buf breaking.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/python scripts/generate_protos.py --check
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/hadolint --failure-threshold warning Dockerfile
echo "hadolint: clean"
# Pinned, not the tool's moving default: 1.30 is the oldest Kubernetes the manifests are for.
.venv/bin/kubernetes-validate --strict --quiet -k 1.30.0 deploy/kubernetes/*.yaml
echo "kubernetes-validate --strict (1.30.0): clean"
if command -v buf >/dev/null 2>&1; then
  (cd proto && buf lint)
  echo "buf lint: clean"
  # Every released API, one image per release: a change that breaks stubs generated from any
  # release fails here.
  for image in proto/releases/*.binpb; do
    (cd proto && buf breaking --against "releases/$(basename "$image")")
    echo "buf breaking (against $(basename "$image" .binpb)): clean"
  done
else
  echo "buf not found: buf lint skipped (CI installs it)"
fi
