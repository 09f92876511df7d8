# stage-out, headnode side: run in the headnode by the host through the guest agent, as root,
# as `python3 -I -S -c "$(cat place.py)" ARCHIVE JOBID SNAP_NS ACCOUNT PATH...`
# (sent at run time). ARCHIVE is the clone's tar (d.tar of pack.sh); the clone is the job's, so
# the archive is untrusted. As root this only makes the account's ledger folder and hands it and
# the archive to the account; then it becomes the job's ACCOUNT (groups, gid, uid: no way back),
# unpacks the archive with GNU tar into a fresh folder and moves each entry to its absolute path,
# all with the account's rights only.
#
# The rule for each entry (relative path R in the archive, destination /R):
# - a folder missing in the headnode is moved in whole (one rename, with its contents);
# - a folder already there: only its contents are looked at;
# - a file or symlink whose headnode copy changed since the snapshot (ctime after SNAP_NS, the
#   snapshot's time in this headnode's clock, as the host worked it out) lands beside
#   it as /R.copper-JOBID, unless that change was an earlier stage-out's (its device:inode:ctime
#   is in the account's ledger): then the later job wins, as on a shared filesystem;
# - anything else (device files, FIFOs, sockets a hostile archive may carry) is dropped, and so
#   is what lies outside the PATHs the job was to bring home (a hostile clone may add more).
# Symlinks are moved as links, never followed. Deletions do not propagate.
# Prints one JSON object: placed, conflicts (first 20), nconflicts, errors (first 5).
# One process, few imports (run with -I -S): under TCG every program and module costs time.
import json, os, stat, sys

arch, job, account = sys.argv[1], sys.argv[2], sys.argv[4]
snap_ns = int(sys.argv[3])
wanted = [p.rstrip('/') for p in sys.argv[5:]]
ledger_dir = os.path.join(os.environ.get('COPPER_STAGEOUT_LEDGERS', '/var/lib/copper/stageout'), account)
ledger = os.path.join(ledger_dir, 'ledger')


def become(account):
    import pwd
    pw = pwd.getpwnam(account)
    os.makedirs(os.path.dirname(ledger_dir), mode=0o755, exist_ok=True)
    try:
        os.mkdir(ledger_dir, 0o700)
    except FileExistsError:
        pass
    for p in (ledger_dir, arch):
        os.lchown(p, pw.pw_uid, pw.pw_gid)
    os.chmod(arch, 0o600)
    if pw.pw_uid != 0:
        os.initgroups(account, pw.pw_gid)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)


if os.geteuid() == 0:
    become(account)
root = os.geteuid() == 0
placed, conflicts, nconflicts, errors = 0, [], 0, []
new_keys = []


def err(msg):
    if len(errors) < 5:
        errors.append(msg[:300])


def key(st):
    return '%d:%d:%d' % (st.st_dev, st.st_ino, st.st_ctime_ns)


def remember(path):
    # Keys of what this stage-out wrote, so a later stage-out overwrites it (last one wins).
    try:
        st = os.lstat(path)
    except OSError:
        return
    new_keys.append(key(st))
    if stat.S_ISDIR(st.st_mode):
        for top, dirs, files in os.walk(path):
            for n in dirs + files:
                try:
                    new_keys.append(key(os.lstat(os.path.join(top, n))))
                except OSError:
                    pass


def move(src, dst):
    global placed
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != 18:  # EXDEV: another filesystem; copy, keeping links as links
            raise
        import shutil
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True)
        else:
            if os.path.lexists(dst) and not os.path.isdir(dst):
                os.unlink(dst)
            shutil.copy2(src, dst, follow_symlinks=False)
        if root:
            st = os.lstat(src)
            os.lchown(dst, st.st_uid, st.st_gid)
    placed += 1
    remember(dst)


def purge(path):
    # Only files, links and folders come home.
    for top, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(top, n)
            m = os.lstat(p).st_mode
            if not (stat.S_ISREG(m) or stat.S_ISLNK(m) or stat.S_ISDIR(m)):
                os.unlink(p)


def inside(dest):
    return any(p == '' or dest == p or dest.startswith(p + '/') for p in wanted)


def above(dest):
    return any(p.startswith(dest + '/') for p in wanted)


def walk(stage, rel, known):
    global nconflicts
    here = os.path.join(stage, rel)
    for name in sorted(os.listdir(here)):
        r = os.path.join(rel, name)
        src = os.path.join(stage, r)
        dest = '/' + r
        try:
            sst = os.lstat(src)
            try:
                dst = os.lstat(dest)
            except FileNotFoundError:
                dst = None
            if not inside(dest):
                if stat.S_ISDIR(sst.st_mode) and above(dest):
                    if dst is None:
                        os.mkdir(dest, stat.S_IMODE(sst.st_mode))
                    if os.path.isdir(dest) and not os.path.islink(dest):
                        walk(stage, r, known)
                        continue
                err('%s: outside the stage-out paths, not written' % dest)
                continue
            if stat.S_ISDIR(sst.st_mode):
                if dst is not None and stat.S_ISDIR(dst.st_mode):
                    walk(stage, r, known)
                    continue
                if dst is None:
                    move(src, dest)
                    continue
            target = dest
            if dst is not None and (stat.S_ISDIR(dst.st_mode) or (dst.st_ctime_ns > snap_ns and key(dst) not in known)):
                target = dest + '.copper-' + job
                nconflicts += 1
                if len(conflicts) < 20:
                    conflicts.append(dest)
            move(src, target)
        except OSError as e:
            err('%s: %s' % (dest, e.strerror or e))


def rmtree(path):
    for top, dirs, files in os.walk(path, topdown=False):
        for n in files:
            os.unlink(os.path.join(top, n))
        for n in dirs:
            p = os.path.join(top, n)
            if os.path.islink(p):
                os.unlink(p)
            else:
                os.rmdir(p)
    os.rmdir(path)


stage = '/var/tmp/.copper-stage-' + os.urandom(6).hex()
os.mkdir(stage, 0o700)
try:
    cmd = ['tar', '-x', '-f', arch, '-C', stage, '-p', '--delay-directory-restore']
    cmd += ['--numeric-owner', '--same-owner'] if root else ['--no-same-owner']
    # tar's own messages go to this program's stderr (the host logs them).
    rc = os.spawnvp(os.P_WAIT, 'tar', cmd)
    if rc != 0:
        err('tar ended with status %d' % rc)
    purge(stage)
    try:
        with open(ledger) as f:
            old = f.read().split('\n')
    except OSError:
        old = []
    walk(stage, '', set(old))
    if new_keys:
        try:
            keep = [k for k in old if k][-20000:] + new_keys
            tmp = ledger + '.new'
            with open(tmp, 'w') as f:
                f.write('\n'.join(keep) + '\n')
            os.rename(tmp, ledger)
        except OSError as e:
            err('ledger %s: %s' % (ledger, e.strerror))
finally:
    try:
        rmtree(stage)
    except OSError:
        pass
    try:
        os.unlink(arch)
    except OSError:
        pass
print(json.dumps({'placed': placed, 'conflicts': conflicts, 'nconflicts': nconflicts, 'errors': errors}))
