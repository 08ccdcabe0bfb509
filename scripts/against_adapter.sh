#!/usr/bin/env bash
# Usage: scripts/against_adapter.sh NAME SECONDS COMMAND [ARGS...]
# Start `nvp-adapter serve` on a free loopback port (embedded gateway), run COMMAND ARGS --target
# HOST:PORT for at most SECONDS, stop the adapter with SIGTERM (SIGKILL after 15 s). Exits 0 only
# when the client and the adapter both exited 0; prints the adapter's log otherwise, its lines
# prefixed by NAME. Leaves no process behind. The examples' scripts (node_example.sh,
# go_example.sh) run their clients through it.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 seconds=$2
shift 2

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
    echo "$name: the adapter did not stop within 15 s of SIGTERM; killing it" >&2
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
  echo "$name: the adapter did not say where it listens within 30 s" >&2
  cat "$work/adapter.out" "$work/adapter.err" >&2
  exit 1
fi

# In the background and waited for, so that a signal to this script is acted on at once.
timeout "$seconds" "$@" --target "$address" &
client=$!
status=0
wait "$client" || status=$?
client=""
adapter_status=0
stop_adapter || adapter_status=$?
if [ "$status" -ne 0 ] || [ "$adapter_status" -ne 0 ]; then
  echo "$name: FAILED (client exit $status, adapter exit $adapter_status); adapter's log:" >&2
  cat "$work/adapter.err" >&2
  exit 1
fi
echo "$name: passed against nvp-adapter on $address"
