#!/usr/bin/env bash
# Generate every language's stubs from proto/ with proto/buf.gen.yaml (local plugins only) into
# proto/gen/ (git-ignored), and check them: each .proto gave each language its files; the Go
# package builds and vets; the Python modules import (with the adapter's grpcio and protobuf) and
# the .pyi stubs parse; the C++ (messages and gRPC) and Java (messages) sources compile. Kotlin, C#,
# Ruby, PHP and Objective-C are checked for their files only: no compiler for them here.
#
# Installs with apt-get what is missing: protoc and the gRPC plugins, Debian's protoc-gen-go and
# protoc-gen-go-grpc, the Go toolchain and libraries' sources, and the C++ and Java protobuf
# libraries. buf comes from the npm registry (.ci/run installs it): on PATH, or where .ci/run puts it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

# golang-github-golang-protobuf-1-5-dev: see scripts/go_example.sh.
scripts/debian_packages.sh protobuf-compiler protobuf-compiler-grpc libprotobuf-dev \
  libgrpc++-dev libprotobuf-java protoc-gen-go protoc-gen-go-grpc golang-go \
  golang-google-protobuf-dev golang-google-grpc-dev golang-google-genproto-dev \
  golang-github-golang-protobuf-1-5-dev

tools="${XDG_CACHE_HOME:-$HOME/.cache}/nvp-adapter-tools/node_modules/.bin"
if ! command -v buf >/dev/null 2>&1; then
  if [ ! -x "$tools/buf" ]; then
    echo "proto generate: buf not found, on PATH or in $tools (.ci/run installs it)" >&2
    exit 1
  fi
  export PATH="$tools:$PATH"
fi

(cd proto && buf generate)
gen=proto/gen
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=0
fail() {
  echo "proto generate: $*" >&2
  failed=1
}
# The files a language must have for every proto file: one pattern per file, where {base} is the
# file's name (payment_service), {Camel} its CamelCase (PaymentService) and {Outer} its
# java_outer_classname; a pattern that starts with "~" names a file that may be empty (Kotlin's
# file-level one, empty when a file has nothing Kotlin adds at file level). Files that declare a
# service also need the gRPC stubs' patterns.
expect() {  # expect FILE PATTERN...
  local proto=$1 pattern path
  shift
  local base camel outer
  base=$(basename "$proto" .proto)
  camel=$(echo "$base" | sed -E 's/(^|_)([a-z])/\U\2/g')
  outer=$(sed -n 's/^option java_outer_classname = "\(.*\)";/\1/p' "$proto")
  for pattern in "$@"; do
    path=${pattern//\{base\}/$base}
    path=${path//\{Camel\}/$camel}
    path=${path//\{Outer\}/$outer}
    if [ "${path:0:1}" = "~" ]; then
      path=${path:1}
      [ -f "$gen/$path" ] || fail "$proto gave no $gen/$path"
    else
      [ -s "$gen/$path" ] || fail "$proto gave no $gen/$path, or an empty one"
    fi
  done
}
v1=mpgs/gateway/v1
java=java/com/nvpadapter/mpgs/gateway/v1
kotlin=kotlin/com/nvpadapter/mpgs/gateway/v1
protos=(proto/$v1/*.proto)
for proto in "${protos[@]}"; do
  expect "$proto" "python/$v1/{base}_pb2.py" "python/$v1/{base}_pb2.pyi" \
    "python/$v1/{base}_pb2_grpc.py" "go/$v1/{base}.pb.go" "cpp/$v1/{base}.pb.h" \
    "cpp/$v1/{base}.pb.cc" "$java/{Outer}.java" "~$kotlin/{Outer}Kt.kt" "csharp/{Camel}.cs" \
    "ruby/$v1/{base}_pb.rb" "php/GPBMetadata/Mpgs/Gateway/V1/{Camel}.php" \
    "objc/$v1/{Camel}.pbobjc.h" "objc/$v1/{Camel}.pbobjc.m"
  base=$(basename "$proto" .proto)
  for service in $(sed -n 's/^service \([A-Za-z0-9]*\) {$/\1/p' "$proto"); do
    expect "$proto" "go/$v1/{base}_grpc.pb.go" "cpp/$v1/{base}.grpc.pb.h" \
      "cpp/$v1/{base}.grpc.pb.cc" "ruby/$v1/{base}_services_pb.rb" \
      "php/Mpgs/Gateway/V1/${service}Client.php"
    grep -q "class ${service}Stub" "$gen/python/$v1/${base}_pb2_grpc.py" ||
      fail "$proto: no ${service}Stub in its Python gRPC stubs"
  done
done
[ "$failed" -ne 0 ] || echo "proto generate: ${#protos[@]} files, each with Python, Go, C++, Java," \
  "Kotlin, C#, Ruby, PHP and Objective-C stubs"

# Go: the package at its go_package import path in a temporary GOPATH (see scripts/go_example.sh).
mkdir -p "$work/gopath/src/nvp-adapter.example/gen"
ln -s "$PWD/$gen/go" "$work/gopath/src/nvp-adapter.example/gen/go"
if (
  export GO111MODULE=off GOFLAGS="" GOPROXY=off GOPATH="$work/gopath:/usr/share/gocode"
  go build "nvp-adapter.example/gen/go/$v1" && go vet "nvp-adapter.example/gen/go/$v1"
); then
  echo "proto generate: Go builds"
else
  fail "the Go package does not build"
fi

python=$PWD/.venv/bin/python
if (cd "$gen/python" && "$python" - "$v1" <<'EOF'
"""Import every generated module; parse every .pyi."""
import ast
import importlib
import sys
from pathlib import Path

folder = Path(sys.argv[1])
for path in sorted(folder.glob("*.py")):
    importlib.import_module(".".join((*folder.parts, path.stem)))
for path in sorted(folder.glob("*.pyi")):
    ast.parse(path.read_text(), str(path))
EOF
); then
  echo "proto generate: Python imports"
else
  fail "the Python modules do not import"
fi

if command -v g++ >/dev/null 2>&1; then
  compiled=1
  for source in "$gen/cpp/$v1"/*.cc; do
    g++ -std=c++17 -fsyntax-only -I"$gen/cpp" "$source" || { fail "$source does not compile"; compiled=0; }
  done
  [ "$compiled" -eq 0 ] || echo "proto generate: C++ compiles"
else
  echo "proto generate: no g++: C++ checked for its files only"
fi

if command -v javac >/dev/null 2>&1; then
  # Debian's protobuf.jar is 3.21, the runtime matching its protoc's Java output.
  if javac -nowarn -cp /usr/share/java/protobuf.jar -d "$work/classes" "$gen/$java"/*.java; then
    echo "proto generate: Java compiles"
  else
    fail "the Java sources do not compile"
  fi
else
  echo "proto generate: no javac: Java checked for its files only"
fi

if [ "$failed" -ne 0 ]; then
  echo "proto generate: FAILED" >&2
  exit 1
fi
echo "proto generate: passed ($gen)"
