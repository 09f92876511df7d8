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
pack() { # LIST TAR
  # --no-recursion: a listed folder brings its own mode and owner, not its unchanged contents.
  tar -C / -c -f "$2" --numeric-owner --no-recursion --ignore-failed-read --null -T "$1" 2>"$2.err"
  rc=$?
  [ $rc -le 1 ] || { echo "tar: $(head -c 300 "$2.err")" >&2; exit 4; }
}
[ $nd -eq 0 ] || pack "$OUT/d.list" "$OUT/d.tar"
[ $nx -eq 0 ] || pack "$OUT/x.list" "$OUT/x.tar"
echo "$nd $db $nx $xb"
