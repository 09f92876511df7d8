#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian/Ubuntu machine (as root, or a user with sudo):
# install everything, build the headnode image, start gcd, create and boot a headnode, and
# inside it: install a Debian package, write a program that uses it, `gcqsub python3 myprogram.py`,
# then read the output file that appears next to the program when the job ends.
set -euo pipefail
# Root is needed (apt-get, /var/lib/copper, QEMU). A fresh Debian root has no sudo, a user has
# it: re-run this script through sudo only when not root, keeping PATH (node may be the user's).
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "$0: run it as root (su -), or install sudo" >&2; exit 1; }
  exec sudo --preserve-env env "PATH=$PATH" bash "$(readlink -f "$0")" "$@"
fi
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

export GC_STATE_DIR="${GC_STATE_DIR:-/var/lib/copper}"
HN="${DEMO_HEADNODE:-demo}"
gc() { node bin/gc.js "$@"; }
inside() { gc headnode exec "$HN" --timeout 900 -- sh -c "$1"; }

echo "== building the headnode image (cached after the first time)"
gc image build

if ! node bin/gcqstat.js >/dev/null 2>&1; then
  echo "== starting gcd (log: $GC_STATE_DIR/gcd.log)"
  mkdir -p "$GC_STATE_DIR"
  nohup node bin/gcd.js >>"$GC_STATE_DIR/gcd.log" 2>&1 &
  for _ in $(seq 100); do node bin/gcqstat.js >/dev/null 2>&1 && break; sleep 0.2; done
fi

gc headnode list | grep -q "^$HN " || gc headnode create "$HN" --owner "${SUDO_USER:-alice}" --mem 512 --vcpus 1 --disk 4
echo "== booting headnode $HN"
gc headnode start "$HN"

echo "== inside $HN: apt-get install python3-six (user networking reaches Debian's mirror; slow under TCG)"
inside 'apt-get update -q >/dev/null && apt-get install -y -q python3-six >/dev/null && echo installed python3-six'
echo "== inside $HN: write myprogram.py and submit it"
inside 'mkdir -p /root/work && cat > /root/work/myprogram.py <<PY
import six, socket
print("hello from", socket.gethostname(), "with six", six.__version__)
PY
cd /root/work && gcqsub -W block=true python3 myprogram.py'
echo "== the queue, finished jobs included"
node bin/gcqstat.js -x
echo "== inside $HN: the output file next to myprogram.py"
inside 'cd /root/work && ls -l && cat python3.o*'
echo "== done. gcd keeps running (pid $(cat "$GC_STATE_DIR/gcd.pid")); stop it with: kill \$(cat $GC_STATE_DIR/gcd.pid)"
