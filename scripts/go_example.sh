#!/usr/bin/env bash
# Run examples/go, the grpc-go client, against a live adapter: install Debian's Go toolchain,
# protoc, protoc-gen-go, protoc-gen-go-grpc and the Go libraries' sources (only those missing),
# generate the stubs from proto/ into a temporary GOPATH, build the client offline, start
# `nvp-adapter serve` on a free loopback port (embedded gateway), run the client, stop the adapter
# with SIGTERM. Exits non-zero if any step failed; leaves no process behind, and nothing but Go's
# build cache (which makes a repeat run take seconds). Extra arguments go to the client.
#
# Offline by construction: Debian installs the libraries' sources under /usr/share/gocode/src, and
# the build runs in GOPATH mode (GO111MODULE=off) with that folder on GOPATH, beside a temporary
# one holding the generated package at its go_package import path. No module proxy, no go.sum.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

# grpc-go and genproto depend on "golang-github-golang-protobuf-1-3-dev | ...-1-5-dev", and apt
# takes the first: github.com/golang/protobuf 1.3 predates google.golang.org/protobuf, which
# protoc-gen-go 1.28's output is built on (the client builds with it, then grpc-go's codec panics
# on the first call). 1.5 is named so that apt takes it instead.
scripts/debian_packages.sh golang-go protobuf-compiler libprotobuf-dev protoc-gen-go \
  protoc-gen-go-grpc golang-google-protobuf-dev golang-google-grpc-dev golang-google-genproto-dev \
  golang-github-golang-protobuf-1-5-dev

example=examples/go
work=$(mktemp -d)
adapter=""
client=""
stop_adapter() {  # SIGTERM, up to 15 s for a graceful stop, then SIGKILL; the adapter's exit code
  local status=0
  [ -n "$adapter" ] || return 0
  kill -TERM "$adapter" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 "$adapter" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$adapter" 2>/dev/null; then
    echo "go example: the adapter did not stop within 15 s of SIGTERM; killing it" >&2
    kill -KILL "$adapter" 2>/dev/null || true
  fi
  wait "$adapter" || status=$?
  adapter=""
  return "$status"
}
cleanup() {
  if [ -n "$client" ]; then kill -TERM "$client" 2>/dev/null || true; wait "$client" || true; fi
  stop_adapter || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The stubs, at their go_package import path (nvp-adapter.example/gen/go/mpgs/gateway/v1) under
# the temporary GOPATH: protoc-gen-go and protoc-gen-go-grpc place each file by it.
mkdir -p "$work/gopath/src"
protoc -I proto --go_out="$work/gopath/src" --go-grpc_out="$work/gopath/src" \
  proto/mpgs/gateway/v1/*.proto
export GO111MODULE=off GOFLAGS="" GOPROXY=off GOPATH="$work/gopath:/usr/share/gocode"
go vet "./$example"
go build -o "$work/checkout" "./$example"
echo "go example: built with $(go version | cut -d' ' -f3), $(protoc-gen-go --version)," \
  "protoc-gen-go-grpc $(protoc-gen-go-grpc --version | cut -d' ' -f2)"

.venv/bin/nvp-adapter serve --listen 127.0.0.1:0 >"$work/adapter.out" 2>"$work/adapter.err" &
adapter=$!

# Its first stdout line: "nvp-adapter listening on HOST:PORT (upstream: embedded gateway)".
address=""
for _ in $(seq 300); do
  if [ -s "$work/adapter.out" ] && [ "$(wc -l <"$work/adapter.out")" -ge 1 ]; then
    address=$(head -n 1 "$work/adapter.out" | sed -n 's/^nvp-adapter listening on \([^ ]*\) .*/\1/p')
    break
  fi
  kill -0 "$adapter" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$address" ]; then
  echo "go example: the adapter did not say where it listens within 30 s" >&2
  cat "$work/adapter.out" "$work/adapter.err" >&2
  exit 1
fi

# In the background and waited for, so that a signal to this script is acted on at once.
timeout 90 "$work/checkout" --target "$address" "$@" &
client=$!
status=0
wait "$client" || status=$?
client=""
adapter_status=0
stop_adapter || adapter_status=$?
if [ "$status" -ne 0 ] || [ "$adapter_status" -ne 0 ]; then
  echo "go example: FAILED (client exit $status, adapter exit $adapter_status); adapter's log:" >&2
  cat "$work/adapter.err" >&2
  exit 1
fi
echo "go example: passed against nvp-adapter on $address"
