#!/usr/bin/env bash
# Static checks: stub drift (the server's and the client's), ruff (lint and format), mypy --strict
# (adapter, the client, tests, scripts), the client's wheel built and checked, hadolint on the
# Dockerfile, kubernetes-validate --strict on deploy/kubernetes/, buf lint and buf breaking.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/python scripts/generate_protos.py --check
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# clients/python as a wheel: every stub with its .pyi, py.typed, three dependencies, no server.
.venv/bin/python scripts/build_client.py
.venv/bin/hadolint --failure-threshold warning Dockerfile
echo "hadolint: clean"
# Pinned, not the tool's moving default: 1.30 is the oldest Kubernetes the manifests are for.
.venv/bin/kubernetes-validate --strict --quiet -k 1.30.0 deploy/kubernetes/*.yaml
echo "kubernetes-validate --strict (1.30.0): clean"
if command -v buf >/dev/null 2>&1; then
  (cd proto && buf lint)
  echo "buf lint: clean"
  # Every released API, one image per release: a change that breaks stubs generated from any
  # release fails here. 0.1.0 set no language options (go_package, java_package, ...); 0.2.0 sets
  # them (CONTRACT §11), which moves Go, Java, C#, PHP and Ruby stubs generated from 0.1.0 to new
  # package names while the wire stays the same: the one change allowed against 0.1.0.
  (cd proto && buf breaking --against releases/v0.1.0.binpb --config '{"version": "v2",
    "breaking": {"use": ["FILE"], "except": ["FILE_SAME_CSHARP_NAMESPACE", "FILE_SAME_GO_PACKAGE",
    "FILE_SAME_JAVA_MULTIPLE_FILES", "FILE_SAME_JAVA_OUTER_CLASSNAME", "FILE_SAME_JAVA_PACKAGE",
    "FILE_SAME_PHP_NAMESPACE", "FILE_SAME_RUBY_PACKAGE"]}}')
  echo "buf breaking (against v0.1.0, language options aside): clean"
  for image in proto/releases/*.binpb; do
    [ "$(basename "$image")" = v0.1.0.binpb ] && continue
    (cd proto && buf breaking --against "releases/$(basename "$image")")
    echo "buf breaking (against $(basename "$image" .binpb)): clean"
  done
else
  echo "buf not found: buf lint skipped (CI installs it)"
fi
