# Output delivery, headnode side (issue 13 item 8): run in the headnode by the host through the
# guest agent, as root, as `python3 -I -S -c "$(cat deliver.py)" STAGED ACCOUNT DEST`.
# STAGED is the job's output, copied by the host into a root-only folder. The job's ACCOUNT is
# whatever the guest said when it submitted, so it is trusted with nothing: as root this only
# opens STAGED; then it becomes ACCOUNT (groups, gid, uid: no way back) and writes DEST with
# that account's rights alone, so an -o path in /etc or /root that the account could not write
# is refused here (status 13 and one line), never written by root.
# The file is written beside DEST under a fresh name (O_EXCL, no symlink followed) and renamed
# over DEST, so a reader never sees half of it and a planted symlink is replaced, not followed.
import os, sys

staged, account, dest = sys.argv[1], sys.argv[2], sys.argv[3]


def fail(status, msg):
    sys.stderr.write(msg + '\n')
    sys.exit(status)


try:
    src = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW)
except OSError as e:
    fail(2, 'staged output %s: %s' % (staged, e.strerror))
os.unlink(staged)
if os.geteuid() == 0:
    import pwd
    try:
        pw = pwd.getpwnam(account)
    except KeyError:
        fail(3, 'no account %s in the headnode' % account)
    if pw.pw_uid != 0:
        os.initgroups(account, pw.pw_gid)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
folder = os.path.dirname(dest) or '/'
tmp = os.path.join(folder, '.%s.copper-%s' % (os.path.basename(dest)[:200], os.urandom(6).hex()))
try:
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
except OSError as e:
    fail(13, '%s: account %s may not write in %s (%s)' % (dest, account, folder, e.strerror))
try:
    while True:
        b = os.read(src, 1 << 20)
        if not b:
            break
        while b:
            b = b[os.write(out, b):]
    os.fchmod(out, 0o644)
    os.close(out)
    os.rename(tmp, dest)
except OSError as e:
    try:
        os.unlink(tmp)
    except OSError:
        pass
    fail(13, '%s: account %s may not write it (%s)' % (dest, account, e.strerror))
