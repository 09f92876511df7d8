import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setting } from '../../src/config/settings.js';
import { removeGuestEgress } from '../../src/vm/guest-egress.js';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * Issue 13 item 7: every QEMU runs as an unprivileged uid, one per headnode (its clones share
 * it). Two users' headnodes under TCG: each QEMU's real and effective uid is its own, neither
 * uid can read the other's disk, RAM or snapshot files nor any host file of the state folder,
 * and a job still runs in a clone (as its headnode's uid) with its output coming home.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';
const GID = 64000 + (process.pid % 1000);
const UID_BASE = 1_100_000_000 + (process.pid % 1000) * 1000;
const MEM_MIB = 384;
const A = 'qu-hn-a';
const B = 'qu-hn-b';

/** Real, effective, saved and filesystem uid (or gid) of a process. */
function ids(pid: number, which: 'Uid' | 'Gid'): number[] {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return (new RegExp(`^${which}:\\s+(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).map(Number);
}

/** Run argv as uid/gid (no groups), as a QEMU of that uid would. */
function asUid(uid: number, argv: string[]): { status: number; stderr: string; stdout: string } {
  const r = spawnSync('setpriv', ['--reuid', String(uid), '--regid', String(GID), '--clear-groups', '--', ...argv], { encoding: 'utf8' });
  return { status: r.status ?? -1, stderr: r.stderr, stdout: r.stdout };
}

/** Every regular file (or Unix socket) under dir. */
function filesUnder(dir: string, kind: 'file' | 'socket' = 'file'): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, kind));
    else if (kind === 'file' ? e.isFile() : e.isSocket()) out.push(p);
  }
  return out;
}

/** Paths under the state and RAM folders not owned by uid. */
function notOwnedBy(uid: number, paths: string[]): string[] {
  return paths.filter((f) => {
    try {
      return statSync(f).uid !== uid;
    } catch {
      return false; // gone meanwhile
    }
  });
}

describe('QEMU runs as a uid of its headnode (issue 13 item 7) @vm', function () {
  this.timeout(1_200_000);
  let g: GcdProcess;
  let ramDir = '';
  const uidOf = (hn: string): number => ids(g.pidOf(`headnodes/${hn}/qemu.pid`), 'Uid')[0] ?? -1;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    g = new GcdProcess({
      GC_IMAGE_DIR: IMAGE_DIR,
      GC_SERVER_NAME: 'srv',
      GC_VM_GID: String(GID),
      GC_VM_UID_BASE: String(UID_BASE),
      GC_VM_UID_COUNT: '1000',
    });
    ramDir = setting('ramDir', g.env);
    await g.start();
    g.startHeadnodes(
      [
        [A, 'alice'],
        [B, 'bob'],
      ],
      MEM_MIB,
    );
  });

  after(async function () {
    if (g) {
      g.tool('gc', ['headnode', 'destroy', A]);
      g.tool('gc', ['headnode', 'destroy', B]);
      await g.cleanup();
    }
    await removeGuestEgress(GID);
  });

  it("runs each headnode's QEMU as a uid of its own from the range, never root", function () {
    for (const hn of [A, B]) {
      const pid = g.pidOf(`headnodes/${hn}/qemu.pid`);
      const uids = ids(pid, 'Uid');
      expect(new Set(uids).size, `${hn} uids ${uids.join(' ')}`).to.equal(1);
      expect(uids[0]).to.be.within(UID_BASE, UID_BASE + 999);
      expect(ids(pid, 'Gid')[0]).to.equal(GID);
    }
    expect(uidOf(A)).to.not.equal(uidOf(B));
    // The record keeps it: the same uid after a restart of the headnode and for its clones.
    const rec = JSON.parse(readFileSync(join(g.stateDir, 'headnodes', A, 'headnode.json'), 'utf8')) as { vmUid?: number };
    expect(rec.vmUid).to.equal(uidOf(A));
  });

  it("one headnode's uid cannot read the other's disk or RAM, nor list the VM folders; its own it can", function () {
    const ua = uidOf(A);
    const diskB = join(g.stateDir, 'headnodes', B, 'disk-0.qcow2');
    const ramB = join(ramDir, 'headnodes', `${B}.ram`);
    for (const f of [diskB, ramB]) {
      expect(existsSync(f), f).to.equal(true);
      const r = asUid(ua, ['head', '-c', '1', f]);
      expect(r.status, f).to.not.equal(0);
      expect(r.stderr).to.match(/Permission denied/);
    }
    const ls = asUid(ua, ['ls', join(g.stateDir, 'headnodes')]);
    expect(ls.status).to.not.equal(0);
    expect(ls.stderr).to.match(/Permission denied/);
    // Not a test of a missing file: its own disk and RAM file open fine.
    for (const f of [join(g.stateDir, 'headnodes', A, 'disk-0.qcow2'), join(ramDir, 'headnodes', `${A}.ram`)]) {
      expect(asUid(ua, ['head', '-c', '1', f]).status, f).to.equal(0);
    }
  });

  it("a job runs in a clone as its headnode's uid, its output comes home, and its snapshot is that uid's alone", async function () {
    const ua = uidOf(A);
    const ub = uidOf(B);
    const prep = g.inHeadnode(A, 'mkdir -p /root/w && echo ok');
    expect(prep.stdout, prep.stderr).to.equal('ok\n');
    const sub = g.inHeadnode(A, 'cd /root/w && gcqsub sh -c "echo job-ran-as-$(id -u); sleep 20"');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const seq = id.split('.')[0];
    const pidFile = join(g.stateDir, 'clones', `j${seq}-r1`, 'qemu.pid');
    const pid = await until('the clone to run', () => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) || false : false), 600_000);
    expect(ids(pid, 'Uid')).to.deep.equal([ua, ua, ua, ua]);
    // The snapshot the clone runs from: its RAM, device state and disk layer are A's uid's only.
    const snaps = readdirSync(join(g.stateDir, 'snapshots')).filter((s) => s.startsWith(`${A}.`));
    expect(snaps.length).to.be.at.least(1);
    const sp = join(g.stateDir, 'snapshots', snaps[0]);
    for (const f of [join(sp, 'state.bin'), join(sp, 'disk.qcow2'), join(ramDir, 'snapshots', `${snaps[0]}.ram`)]) {
      expect(statSync(f).uid, f).to.equal(ua);
      expect(statSync(f).mode & 0o077, f).to.equal(0);
      const r = asUid(ub, ['head', '-c', '1', f]);
      expect(r.stderr, f).to.match(/Permission denied/);
    }
    const state = (): string | undefined => {
      const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
      return r.status === 0 ? (JSON.parse(r.stdout) as { Jobs: Record<string, { job_state: string }> }).Jobs[id]?.job_state : undefined;
    };
    await until(`job ${id} to finish`, () => state() === 'F', 600_000);
    const out = g.inHeadnode(A, `cat /root/w/sh.o${seq}`);
    expect(out.stdout, out.stderr).to.equal('job-ran-as-0\n');
  });

  it("no VM uid can read any host file of the state folder or the RAM folder that is not its own VM's", function () {
    const ua = uidOf(A);
    const ub = uidOf(B);
    for (const uid of [ua, ub]) {
      const others = notOwnedBy(uid, [...filesUnder(g.stateDir), ...filesUnder(ramDir)]);
      expect(others.length).to.be.at.least(5);
      const script = 'for f in "$@"; do head -c 1 "$f" >/dev/null 2>&1 && echo "$f"; done; true';
      const r = asUid(uid, ['sh', '-c', script, 'probe', ...others]);
      expect(r.stdout.split('\n').filter(Boolean), `readable by uid ${uid}`).to.deep.equal([]);
      // Nor connect to a socket of gcd's that is not its own VM's (gcd's API, other VMs' channels and gates).
      const sockets = notOwnedBy(uid, filesUnder(g.stateDir, 'socket'));
      expect(sockets.some((s) => s.endsWith('gcd.sock'))).to.equal(true);
      const connect = 'for s in "$@"; do socat -u OPEN:/dev/null UNIX-CONNECT:"$s" >/dev/null 2>&1 && echo "$s"; done; true';
      const c = asUid(uid, ['sh', '-c', connect, 'probe', ...sockets]);
      expect(c.stdout.split('\n').filter(Boolean), `connectable by uid ${uid}`).to.deep.equal([]);
    }
  });
});
