#!/usr/bin/env bash
# Refresh the lock: compile requirements/*.txt from pyproject.toml on the newest versions its ranges
# admit, rebuild .venv from them, and run the whole suite on them. A library release that breaks the
# adapter or its tests is seen here first, never by a user's fresh clone.
#
#   scripts/refresh_lock.sh              newest versions, then the suite (extra arguments: pytest's)
#   scripts/refresh_lock.sh --keep       after editing pyproject.toml: re-lock, keeping every pin
#                                        the ranges still admit, then the suite
#   scripts/refresh_lock.sh --no-test    compile only
#
# The lock is four hash-pinned requirements files, one resolution:
#   requirements/dev.txt      runtime + otel extra + dev group: what .venv, the tests and CI install
#   requirements/runtime.txt  runtime alone, the same versions: what the image installs
#   requirements/build.txt    the build backend (setuptools), the same version: what builds the wheel
#   requirements/client.txt   the client distribution's dependencies (clients/python), the same
#                             versions: what a fresh environment with only the client installs
# uv compiles them (universal: every platform and Python >= 3.11 the project supports); pip installs
# them with --require-hashes (scripts/bootstrap.sh, the Dockerfile). Commit all four together.
set -euo pipefail
cd "$(dirname "$0")/.."

upgrade=(--upgrade)
test=1
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) upgrade=(); shift ;;
    --no-test) test=0; shift ;;
    *) break ;;
  esac
done

# uv itself comes from the current lock (the dev group), so the compiler is pinned like the rest.
scripts/bootstrap.sh
compile=(.venv/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes
  --custom-compile-command scripts/refresh_lock.sh)
build_requires=$(.venv/bin/python -c \
  'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')

# Written in place (git shows and restores them); uv keeps an output file's pins unless --upgrade.
"${compile[@]}" "${upgrade[@]}" pyproject.toml --extra otel --group dev -o requirements/dev.txt
"${compile[@]}" pyproject.toml --constraints requirements/dev.txt -o requirements/runtime.txt
printf '%s\n' "$build_requires" \
  | "${compile[@]}" - --constraints requirements/dev.txt -o requirements/build.txt
"${compile[@]}" clients/python/pyproject.toml --constraints requirements/dev.txt \
  -o requirements/client.txt
echo "refresh_lock: requirements/ compiled; changes:"
git --no-pager diff --stat -- requirements/ || true

if [ "$test" -eq 1 ]; then
  exec scripts/test.sh "$@"
fi
