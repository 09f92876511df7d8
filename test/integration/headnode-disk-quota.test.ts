/**
 * Issue 13 item 9, headnode disks: quotas.yaml `headnode_disk_bytes` bounds the virtual sizes
 * of all a user's headnode disks together. `gc headnode create` over it is refused in one line
 * naming the quota, its limit and the use, and leaves nothing behind; parallel creates of one
 * user cannot overshoot it; `gc headnode destroy` frees it. A real gcd process with the QEMU
 * backend (no VM is started: creating a headnode only makes its qcow2 overlay and record),
 * real qemu-img, a real redis-server.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeGuestEgress } from '../../src/vm/guest-egress.js';
import { GcdProcess, type ToolRun } from '../helpers/gcd-process.js';

/** An egress table of this test's own (the QEMU backend installs one per GC_VM_GID at start). */
const GID = 60597;

const QUOTAS = `
defaults:
  headnode_disk_bytes: 3gb
users:
  carol:
    headnode_disk_bytes: unlimited
`;

describe('headnode_disk_bytes: gc headnode create against the quota (gcd process, QEMU backend, no VM)', function () {
  this.timeout(120_000);
  let g: GcdProcess;
  let image: string;

  before(async function () {
    g = new GcdProcess({ GC_VM_GID: String(GID), GC_SERVER_NAME: 'srv' });
    const config = join(g.stateDir, 'config');
    mkdirSync(config, { recursive: true });
    writeFileSync(join(config, 'quotas.yaml'), QUOTAS);
    // A user image of 1 GiB virtual size: each headnode's overlay gets --disk GiB on top of it.
    image = join(g.stateDir, 'base.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1G']);
    await g.start();
  });
  after(async function () {
    await g?.cleanup();
    await removeGuestEgress(GID);
  });

  const create = (name: string, owner: string, diskGiB: number): Promise<ToolRun> =>
    g.toolAsync('gc', ['headnode', 'create', name, '--owner', owner, '--disk', String(diskGiB), '--image', image]);
  const headnodeDirs = (): string[] => (existsSync(join(g.stateDir, 'headnodes')) ? readdirSync(join(g.stateDir, 'headnodes')).sort() : []);

  it('lets exactly 3 of 6 parallel 1 GiB creates of one user through a 3gb quota, refusing the rest in one line', async function () {
    const runs = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => create(`a${i}`, 'alice', 1)));
    const ok = runs.filter((r) => r.status === 0);
    const refused = runs.filter((r) => r.status !== 0);
    expect(ok, runs.map((r) => r.stderr).join('')).to.have.length(3);
    for (const r of refused) {
      expect(r.status, r.stderr).to.equal(38);
      expect(r.stderr).to.equal('gc: would exceed headnode_disk_bytes=3gb for user alice (holds 3gb in 3 headnodes, adding 1gb)\n');
    }
    // Nothing of a refused create is left: no folder (record, disk), only the three made.
    const made = headnodeDirs();
    expect(made).to.have.length(3);
    const listed = g.tool('gc', ['headnode', 'list']);
    expect(listed.stdout.split('\n').filter((l) => / alice /.test(l))).to.have.length(3);
    for (const n of made) expect(readdirSync(join(g.stateDir, 'headnodes', n)).sort()).to.include.members(['disk-0.qcow2', 'headnode.json']);
  });

  it('counts the disk size asked, refuses a create that would go above, and other users are not affected', async function () {
    const big = await create('b-big', 'bob', 4);
    expect(big.status).to.equal(38);
    expect(big.stderr).to.equal('gc: would exceed headnode_disk_bytes=3gb for user bob (holds no headnode, adding 4gb)\n');
    expect(headnodeDirs()).to.not.include('b-big');
    const b = await create('b1', 'bob', 2);
    expect(b.status, b.stderr).to.equal(0);
    // carol's own `unlimited` lifts the default.
    const c = await create('c1', 'carol', 8);
    expect(c.status, c.stderr).to.equal(0);
  });

  it('frees the quota when a headnode is destroyed, and the name stays usable', async function () {
    const over = await create('a7', 'alice', 1);
    expect(over.status).to.equal(38);
    const victim = headnodeDirs().find((n) => n.startsWith('a'))!;
    const d = g.tool('gc', ['headnode', 'destroy', victim]);
    expect(d.status, d.stderr).to.equal(0);
    const again = await create(victim, 'alice', 1);
    expect(again.status, again.stderr).to.equal(0);
    expect(headnodeDirs().filter((n) => n.startsWith('a'))).to.have.length(3);
  });

  it("gc quota shows each owner's headnode disks against the quota", async function () {
    const q = g.tool('gc', ['quota']);
    expect(q.status, q.stderr).to.equal(0);
    expect(q.stdout).to.equal(
      [
        'USER   QUOTA                USED               LIMIT',
        'alice  headnode_disk_bytes  3gb (3 headnodes)  3gb',
        'bob    headnode_disk_bytes  2gb (1 headnode)   3gb',
        'carol  headnode_disk_bytes  8gb (1 headnode)   -',
        '',
      ].join('\n'),
    );
    expect(g.tool('gc', ['quota', 'dave']).stdout.split('\n')[1]).to.equal('dave  headnode_disk_bytes  0 (0 headnodes)  3gb');
  });

  it('applies a lowered quota to the next create at once (the file is watched)', async function () {
    const reloads = (): number => g.log.split('quota settings reloaded').length;
    const before = reloads();
    writeFileSync(join(g.stateDir, 'config', 'quotas.yaml'), QUOTAS.replace('3gb', '2gb'));
    for (let i = 0; i < 50 && reloads() === before; i++) await new Promise((res) => setTimeout(res, 200));
    const r = await create('b2', 'bob', 1);
    expect(r.status).to.equal(38);
    expect(r.stderr).to.equal('gc: would exceed headnode_disk_bytes=2gb for user bob (holds 2gb in 1 headnode, adding 1gb)\n');
  });
});
