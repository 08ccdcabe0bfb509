#!/usr/bin/env bash
# Install the named Debian packages that are not installed yet, with apt-get, and nothing else:
# when all are there it returns at once, without apt-get update. Needs root (or sudo).
#
#   scripts/debian_packages.sh golang-go protobuf-compiler
set -euo pipefail

missing=()
for package in "$@"; do
  if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$package")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "debian packages: missing ${missing[*]}; install them as root" >&2
    exit 1
  fi
  sudo=(sudo)
fi
echo "debian packages: installing ${missing[*]}"
# Waits for a lock held by another apt-get on a shared machine rather than failing at once.
apt=(apt-get -q -o DPkg::Lock::Timeout=300)
"${sudo[@]}" "${apt[@]}" update >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends \
  "${missing[@]}" >/dev/null
