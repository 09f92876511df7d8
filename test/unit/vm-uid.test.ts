/**
 * Issue 13 item 7, the parts that need no VM: which uid a new headnode gets, what setpriv is
 * told, and which files the state folder lets a VM uid open (real folders, real setpriv; the
 * VM uid is a number with no passwd entry, as in production).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setting } from '../../src/config/settings.js';
import { ensurePrivateDir } from '../../src/vm/private-dir.js';
import { VmUidRangeFullError, openStateDir, pickVmUid, placeForVm, setprivIds, takenVmUids, vmUidRange } from '../../src/vm/vm-uid.js';

describe('VM uids (issue 13 item 7)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'qu-vm-uid-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('picks a uid of the range that no headnode or snapshot of the state folder holds', async () => {
    const { base, count } = vmUidRange();
    const st = join(dir, 'st1');
    mkdirSync(join(st, 'headnodes', 'a'), { recursive: true });
    mkdirSync(join(st, 'snapshots', 'a.1'), { recursive: true });
    writeFileSync(join(st, 'headnodes', 'a', 'headnode.json'), JSON.stringify({ vmUid: base + 1 }));
    // A destroyed headnode's snapshot still holds its uid: a new headnode must not get it.
    writeFileSync(join(st, 'snapshots', 'a.1', 'meta.json'), JSON.stringify({ vm: { uid: base + 2 } }));
    const taken = await takenVmUids(st);
    expect([...taken].sort()).to.deep.equal([base + 1, base + 2]);
    for (let i = 0; i < 200; i++) {
      const u = pickVmUid(taken);
      expect(u).to.be.within(base, base + count - 1);
      expect(taken.has(u)).to.equal(false);
    }
    const all = new Set<number>();
    for (let i = 0; i < count; i++) all.add(base + i);
    expect(() => pickVmUid(all)).to.throw(VmUidRangeFullError, /no free VM uid/);
  });

  it('tells setpriv the uid and the guests gid, with no supplementary group unless KVM needs one', function () {
    if (process.getuid?.() !== 0) this.skip();
    const ids = setprivIds(1_000_000_007, false);
    expect(ids).to.deep.equal(['--reuid', '1000000007', '--regid', String(setting('vmGid')), '--clear-groups']);
  });

  it('lets a VM uid open its own files by name and nothing else of the state folder', async function () {
    if (process.getuid?.() !== 0) this.skip();
    const st = join(dir, 'st2');
    mkdirSync(join(st, 'headnodes', 'a'), { recursive: true, mode: 0o700 });
    mkdirSync(join(st, 'ended-output', '1.srv'), { recursive: true, mode: 0o755 });
    writeFileSync(join(st, 'ended-output', '1.srv', 'stdout'), 'secret output\n', { mode: 0o644 });
    writeFileSync(join(st, 'gcd.pid'), '1\n', { mode: 0o644 });
    writeFileSync(join(st, 'headnodes', 'a', 'headnode.json'), '{}', { mode: 0o600 });
    const own = join(st, 'headnodes', 'a', 'console.log');
    await openStateDir(st);
    spawnSync('chmod', ['0711', join(st, 'headnodes', 'a')]);
    const uid = 1_000_000_011;
    await placeForVm(own, uid);
    expect(statSync(own).uid).to.equal(uid);
    expect(statSync(own).mode & 0o777).to.equal(0o600);
    const cat = (f: string): number | null =>
      spawnSync('setpriv', ['--reuid', String(uid), '--regid', '60513', '--clear-groups', '--', 'head', '-c', '1', f]).status;
    expect(cat(own)).to.equal(0);
    for (const f of [join(st, 'ended-output', '1.srv', 'stdout'), join(st, 'gcd.pid'), join(st, 'headnodes', 'a', 'headnode.json')]) {
      expect(cat(f), f).to.not.equal(0);
    }
    const ls = spawnSync('setpriv', ['--reuid', String(uid), '--regid', '60513', '--clear-groups', '--', 'ls', st]);
    expect(ls.status).to.not.equal(0);
  });

  it('makes a RAM folder in a sticky place traversable (0711) when asked, private (0700) otherwise', async () => {
    const shm = join(dir, 'shm');
    mkdirSync(shm, { mode: 0o1777 });
    spawnSync('chmod', ['1777', shm]);
    const ram = join(shm, 'copper', 'x', 'headnodes');
    await ensurePrivateDir(ram, 0o711);
    expect(statSync(ram).mode & 0o777).to.equal(0o711);
    expect(statSync(join(shm, 'copper', 'x')).mode & 0o011).to.equal(0o011);
    await ensurePrivateDir(ram);
    expect(statSync(ram).mode & 0o777).to.equal(0o700);
  });
});
