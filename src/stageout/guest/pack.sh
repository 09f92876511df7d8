# stage-out, clone side: run as root in a job's clone after its command ended, by the host
# through the guest agent as `bash -c "$(cat pack.sh)" pack SINCE CAP OUT PATH...`
# (sent at run time, so headnodes built before stage-out existed have it too).
#
# Lists what under each PATH is a regular file, symlink or folder whose inode changed after
# SINCE (seconds since 1970: the clone's start; the clone's clock was set from the host's then)
# and packs it with GNU tar into OUT/d.tar, up to CAP bytes of file content, the rest into
# OUT/x.tar. ctime, not mtime: a job cannot set it back (touch -d, tar -x, cp -p).
# Not listed: device files, sockets, FIFOs; other filesystems below PATH (-xdev: /proc, /run,
# /shared, which is the host's already); what clone-init changed (hostname, hosts, machine-id);
# job scripts the driver put in /tmp; OUT itself.
# Prints one line "ND DBYTES NX XBYTES". Exit 3: OUT unusable; 4: tar failed.
set -u
SINCE=$1 CAP=$2 OUT=$3
shift 3
rm -rf -- "$OUT" && mkdir -m 700 -p -- "$OUT" || exit 3
# find writes a file first: bash reads a regular file in blocks, a pipe one byte at a time.
for p in "$@"; do
  [ -e "$p" ] || [ -L "$p" ] || continue
  find "$p" -xdev \( -type f -o -type l -o -type d \) -newerct "@$SINCE" -printf '%y %s %p\0' 2>/dev/null
done >"$OUT/all"
# The split by the cap: one awk process (a bash loop costs seconds per thousand files under
# TCG); the bash loop where there is no awk.
if command -v awk >/dev/null 2>&1; then
  counts=$(awk -v cap="$CAP" -v out="$OUT" '
    BEGIN { RS = "\0"; nd = db = nx = xb = 0; dl = out "/d.list"; xl = out "/x.list"; printf "" > dl; printf "" > xl }
    {
      t = substr($0, 1, 1); rest = substr($0, 3); i = index(rest, " ")
      s = substr(rest, 1, i - 1) + 0; p = substr(rest, i + 1)
      if (p == "/" || p == "/shared" || substr(p, 1, 8) == "/shared/" || p == "/etc/hostname" || p == "/etc/hosts" ||
          p == "/etc/machine-id" || p == "/var/lib/dbus/machine-id" || substr(p, 1, 17) == "/tmp/.copper-job-" ||
          substr(p, 1, 17) == "/tmp/.copper-tty-" || p == out || substr(p, 1, length(out) + 1) == out "/") next
      if (t != "f") s = 0
      q = p; sub(/^\//, "", q)
      if (db + s <= cap) { db += s; nd++; printf "%s%c", q, 0 > dl } else { xb += s; nx++; printf "%s%c", q, 0 > xl }
    }
    END { printf "%.0f %.0f %.0f %.0f\n", nd, db, nx, xb }' "$OUT/all") || exit 3
  read -r nd db nx xb <<<"$counts"
else
  exec 3>"$OUT/d.list" 4>"$OUT/x.list" || exit 3
  nd=0 db=0 nx=0 xb=0
  while IFS= read -r -d '' rec; do
    t=${rec%% *} rest=${rec#* }
    s=${rest%% *} p=${rest#* }
    case "$p" in
      /|/shared|/shared/*|/etc/hostname|/etc/hosts|/etc/machine-id|/var/lib/dbus/machine-id|/tmp/.copper-job-*|/tmp/.copper-tty-*|"$OUT"|"$OUT"/*) continue ;;
    esac
    [ "$t" = f ] || s=0
    if [ $((db + s)) -le "$CAP" ]; then
      db=$((db + s)) nd=$((nd + 1))
      printf '%s\0' "${p#/}" >&3
    else
      xb=$((xb + s)) nx=$((nx + 1))
      printf '%s\0' "${p#/}" >&4
    fi
  done <"$OUT/all"
  exec 3>&- 4>&-
fi
pack() { # LIST TAR
  # --no-recursion: a listed folder brings its own mode and owner, not its unchanged contents.
  tar -C / -c -f "$2" --numeric-owner --no-recursion --ignore-failed-read --null -T "$1" 2>"$2.err"
  rc=$?
  [ $rc -le 1 ] || { echo "tar: $(head -c 300 "$2.err")" >&2; exit 4; }
}
[ $nd -eq 0 ] || pack "$OUT/d.list" "$OUT/d.tar"
[ $nx -eq 0 ] || pack "$OUT/x.list" "$OUT/x.tar"
echo "$nd $db $nx $xb"
