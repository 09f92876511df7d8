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
# Symlinks are moved as links, never followed. Deletions do not propagate. Entries are placed
# in the order of their mtime in the clone, so a marker written last (a workflow manager's
# "job finished" file) appears after the files written before it.
# Prints one JSON object: placed, conflicts (first 20), nconflicts, errors (first 5).
# One process, few imports (run with -I -S): under TCG every program and module costs time.
import json, os, stat, sys

arch, job, account = sys.argv[1], sys.argv[2], sys.argv[4]
snap_ns = int(sys.argv[3])
wanted = [p.rstrip('/') for p in sys.argv[5:]]
# ARCHIVE '-': no file; GET it from gcd at COPPER_STAGEOUT_FETCH (HOST:PORT/PATH, a one-time
# offer on this headnode's own API channel) and unpack it as it comes.
fetch = os.environ.get('COPPER_STAGEOUT_FETCH') if arch == '-' else None
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
    for p in (ledger_dir,) + (() if fetch else (arch,)):
        os.lchown(p, pw.pw_uid, pw.pw_gid)
    if not fetch:
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


def newest(path):
    # A folder moved in whole shows its contents at once: it goes in at its newest entry's time.
    t = os.lstat(path).st_mtime_ns
    for top, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                t = max(t, os.lstat(os.path.join(top, n)).st_mtime_ns)
            except OSError:
                pass
    return t


def walk(stage, rel, known, todo):
    # Decides where each entry goes; todo gets (mtime, src, target) and is placed afterwards.
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
                        walk(stage, r, known, todo)
                        continue
                err('%s: outside the stage-out paths, not written' % dest)
                continue
            if stat.S_ISDIR(sst.st_mode):
                if dst is not None and stat.S_ISDIR(dst.st_mode):
                    walk(stage, r, known, todo)
                    continue
                if dst is None:
                    todo.append((newest(src), src, dest))
                    continue
            target = dest
            if dst is not None and (stat.S_ISDIR(dst.st_mode) or (dst.st_ctime_ns > snap_ns and key(dst) not in known)):
                target = dest + '.copper-' + job
                nconflicts += 1
                if len(conflicts) < 20:
                    conflicts.append(dest)
            todo.append((sst.st_mtime_ns, src, target))
        except OSError as e:
            err('%s: %s' % (dest, e.strerror or e))


def place(todo):
    # In the order the job wrote them (mtime, then path): a marker a workflow manager polls for
    # (Snakemake's .jobfinished, Nextflow's .exitcode), written after the outputs, appears
    # after them, never before (a path-ordered walk put .snakemake/ before the outputs).
    for _, src, target in sorted(todo, key=lambda e: (e[0], e[2])):
        try:
            move(src, target)
        except OSError as e:
            err('%s: %s' % (target, e.strerror or e))


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


def fetch_into(cmd):
    # GET the archive (plain HTTP/1.0 on a socket: http.client's imports cost seconds under
    # TCG) and pipe its body, exactly Content-Length bytes, into tar. Returns (tar's status,
    # whether the whole body came).
    import socket
    hostport, _, path = fetch.partition('/')
    host, _, port = hostport.rpartition(':')
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.dup2(r, 0)
            os.execvp('tar', cmd)
        finally:
            os._exit(127)
    os.close(r)
    whole = False
    try:
        s = socket.create_connection((host, int(port)), timeout=600)
        s.sendall(('GET /%s HTTP/1.0\r\nHost: gcd\r\n\r\n' % path).encode())
        buf = b''
        while b'\r\n\r\n' not in buf and len(buf) < 16384:
            b = s.recv(65536)
            if not b:
                break
            buf += b
        head, _, body = buf.partition(b'\r\n\r\n')
        lines = head.decode('latin-1').split('\r\n')
        if len(lines[0].split()) < 2 or lines[0].split()[1] != '200':
            raise OSError(0, 'gcd answered %r' % lines[0][:80])
        length = -1
        for h in lines[1:]:
            k, _, v = h.partition(':')
            if k.strip().lower() == 'content-length':
                length = int(v.strip())
        if length < 0:
            raise OSError(0, 'no Content-Length')
        got = 0
        while True:
            body = body[:length - got]
            if body:
                writeall(w, body)
                got += len(body)
            if got >= length:
                break
            body = s.recv(1 << 20)
            if not body:
                break
        s.close()
        whole = got == length
        if not whole:
            err('archive fetch: %d of %d bytes came' % (got, length))
    except (OSError, ValueError) as e:
        err('archive fetch: %s' % (getattr(e, 'strerror', None) or e))
    finally:
        os.close(w)
    _, status = os.waitpid(pid, 0)
    return (os.waitstatus_to_exitcode(status) if hasattr(os, 'waitstatus_to_exitcode') else status >> 8), whole


def writeall(fd, data):
    v = memoryview(data)
    while v:
        v = v[os.write(fd, v):]


stage = '/var/tmp/.copper-stage-' + os.urandom(6).hex()
os.mkdir(stage, 0o700)
try:
    cmd = ['tar', '-x', '-f', arch, '-C', stage, '-p', '--delay-directory-restore']
    cmd += ['--numeric-owner', '--same-owner'] if root else ['--no-same-owner']
    # tar's own messages go to this program's stderr (the host logs them).
    if fetch:
        rc, whole = fetch_into(cmd)
    else:
        rc, whole = os.spawnvp(os.P_WAIT, 'tar', cmd), True
    if rc != 0:
        err('tar ended with status %d' % rc)
    if not whole:
        # A short archive: its last member may be cut. Nothing of it is placed.
        rmtree(stage)
        os.mkdir(stage, 0o700)
    purge(stage)
    try:
        with open(ledger) as f:
            old = f.read().split('\n')
    except OSError:
        old = []
    todo = []
    walk(stage, '', set(old), todo)
    place(todo)
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
    if not fetch:
        try:
            os.unlink(arch)
        except OSError:
            pass
print(json.dumps({'placed': placed, 'conflicts': conflicts, 'nconflicts': nconflicts, 'errors': errors}))
