#!/usr/bin/env bash
# Installs what Copper needs on a fresh Debian/Ubuntu machine (run as root): the Debian
# packages gcd and the image builder use, then the npm dependencies, then a build.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(redis-server qemu-system-x86 qemu-utils debootstrap e2fsprogs kmod busybox-static socat util-linux linux-image-amd64 procps bubblewrap openssh-sftp-server prometheus)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution's redis-server service would hold port 6379 for nothing: Copper runs its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl stop redis-server || true
fi
# Likewise Debian's prometheus service (port 9090): the tests start their own; an admin who
# wants one points it at GC_METRICS_ADDR (README, Metrics).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # Not `npm ci`: npm 11 refuses its own lock files when optional per-platform packages
  # (msgpackr-extract's) are in them. `npm install` follows the lock just the same.
  npm install --no-fund --no-audit >/dev/null
fi
npx tsc -p tsconfig.json
