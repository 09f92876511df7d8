#!/usr/bin/env bash
# Installs what Copper needs on a fresh Debian/Ubuntu machine (as root, or through sudo): the
# Debian packages gcd and the image builder use, Node.js when it is missing or too old, then the
# npm dependencies, then a build.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
# Root is needed (apt-get, /var/lib/copper, QEMU). A fresh Debian root has no sudo, a user has
# it: re-run this script through sudo only when not root, keeping PATH (node may be the user's).
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "$0: run it as root (su -), or install sudo" >&2; exit 1; }
  exec sudo --preserve-env env "PATH=$PATH" bash "$(readlink -f "$0")" "$@"
fi
cd "$(dirname "$0")/.."

# msmtp: a sendmail-compatible MTA the job-mail tests send through (GC_SENDMAIL).
# openssh-client: ssh-keygen, ssh and sftp -D, for the SSH and shared-volume tests.
# libnbd-bin: nbdcopy, how a compute host copies snapshot files from the server's NBD exports.
# nftables: the guests' egress filter (src/vm/guest-egress.ts); iproute2: the test namespaces.
# e2fsprogs and util-linux make and loop-mount the /shared quota volumes (mkfs.ext4, resize2fs, mount, losetup, flock).
PKGS=(redis-server qemu-system-x86 qemu-utils debootstrap e2fsprogs kmod busybox-static socat util-linux linux-image-amd64 procps bubblewrap openssh-sftp-server openssh-client nftables iproute2 msmtp prometheus chromium tmux libnbd-bin)
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

# Node.js >= 20.19: Debian's own when its candidate is new enough (trixie), else the official
# build from nodejs.org (bookworm and Ubuntu 24.04 ship 18), checked against its SHASUMS256.
NODE_MIN=20.19.0
NODE_DIST=v22.12.0
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
node_ok() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && version_ge "$(node -p 'process.versions.node' 2>/dev/null || echo 0)" "$NODE_MIN"; }
if ! node_ok; then
  candidate="$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ {print $2}' | sed 's/^[0-9]*://; s/[-+~].*//')"
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && version_ge "$candidate" "$NODE_MIN"; then
    echo "install-deps: installing Debian's nodejs $candidate" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  else
    arch="$(dpkg --print-architecture)"
    case "$arch" in amd64) narch=x64 ;; arm64) narch=arm64 ;; *) echo "install-deps: no Node.js build for $arch; install Node.js >= $NODE_MIN" >&2; exit 1 ;; esac
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates curl xz-utils >/dev/null
    tarball="node-$NODE_DIST-linux-$narch.tar.xz"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    echo "install-deps: installing Node.js $NODE_DIST from nodejs.org into /usr/local" >&2
    curl -fsSL -o "$tmp/$tarball" "https://nodejs.org/dist/$NODE_DIST/$tarball"
    curl -fsSL -o "$tmp/SHASUMS256.txt" "https://nodejs.org/dist/$NODE_DIST/SHASUMS256.txt"
    (cd "$tmp" && grep " $tarball\$" SHASUMS256.txt | sha256sum -c --quiet -)
    tar -xJf "$tmp/$tarball" -C /usr/local --strip-components=1 --no-same-owner
    hash -r
  fi
  node_ok || { echo "install-deps: Node.js >= $NODE_MIN is still missing" >&2; exit 1; }
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm ci` installs exactly the committed lock and fails if package.json disagrees with it,
  # so CI never rewrites the lock. The lock must list every platform's optional package
  # (msgpackr-extract's): a lock pruned to one platform is "out of sync" for npm ci.
  npm ci --no-fund --no-audit >/dev/null
fi
npx tsc -p tsconfig.json
