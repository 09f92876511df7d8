#!/usr/bin/env bash
# Installs what Copper needs on a fresh Debian/Ubuntu machine (run as root): the Debian
# packages gcd and the image builder use, then the npm dependencies, then a build.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

# msmtp: a sendmail-compatible MTA the job-mail tests send through (GC_SENDMAIL).
PKGS=(redis-server qemu-system-x86 qemu-utils debootstrap e2fsprogs kmod busybox-static socat util-linux linux-image-amd64 procps bubblewrap openssh-sftp-server msmtp prometheus)
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
  # `npm ci` installs exactly the committed lock and fails if package.json disagrees with it,
  # so CI never rewrites the lock. The lock must list every platform's optional package
  # (msgpackr-extract's): a lock pruned to one platform is "out of sync" for npm ci.
  npm ci --no-fund --no-audit >/dev/null
fi
npx tsc -p tsconfig.json
