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
trap 'rm -rf "$work"' EXIT

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

scripts/against_adapter.sh "go example" 90 "$work/checkout" "$@"
