import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isMountPoint, SharedVolumes, unmountSharedVolumes } from '../../src/vm/shared-volumes.js';
import { sftpGateSocket, sftpSlotsDir } from '../../src/vm/vm-args.js';

/**
 * Issue 13 item 5, attacked through the real pieces without a VM: gcd's sftp gate (a Unix
 * socket per owner, what a guest's 10.0.2.101:22 reaches through QEMU's guestfwd), the
 * bubblewrap sandbox around OpenSSH's sftp-server, and a loop-mounted quota volume. OpenSSH's
 * `sftp -D` speaks SFTP to the gate through socat, as sshfs in a guest does.
 */
describe('shared-volume sandbox: /dev, session cap and the /shared quota (issue 13 item 5)', function () {
  this.timeout(120_000);
  let state: string;
  let vols: SharedVolumes;
  const QUOTA_MIB = 16;
  const MAX = 3;

  /** Runs sftp batch commands as the owner's guest would, through the gate. */
  async function sftp(owner: string, batch: string): Promise<{ status: number; out: string; stdout: string }> {
    const file = join(state, `batch-${owner}`);
    writeFileSync(file, batch);
    // Not spawnSync: the gate runs in this process and must go on accepting.
    const p = spawn('sftp', ['-b', file, '-D', `socat - UNIX-CONNECT:${sftpGateSocket(join(state, 'shared', owner))}`]);
    // Both streams in `out` (errors are on stderr), and stdout alone: the two pipes interleave
    // in no fixed order, so a listing is read from stdout only.
    let out = '';
    let stdout = '';
    p.stdout.on('data', (d: Buffer) => ((out += d.toString()), (stdout += d.toString())));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const status = await new Promise<number>((r) => p.once('exit', (code) => r(code ?? -1)));
    return { status, out, stdout };
  }

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    state = mkdtempSync(join(tmpdir(), 'cf-sandbox-'));
    vols = new SharedVolumes({ stateDir: state, maxSessions: MAX, quotaMiB: (owner) => (owner === 'alice' ? QUOTA_MIB : undefined) });
    // alice had a file before she got a quota: it moves into her new volume.
    await vols.prepare('bob');
    writeFileSync(join(state, 'shared', 'bob', 'before.txt'), 'kept\n');
    await vols.prepare('bob');
    await vols.prepare('alice');
  });

  after(async function () {
    if (!vols) return;
    await vols.close();
    spawnSync('pkill', ['-f', join(state, 'shared')]);
    await unmountSharedVolumes(state);
    rmSync(state, { recursive: true, force: true });
  });

  it('writes nothing into the sandbox /dev (a read-only tmpfs: no RAM to fill)', async function () {
    const r = await sftp('bob', '-put /etc/hostname /dev/flood\n-mkdir /dev/d\n-put /etc/hostname /dev/shm/flood\nls -1 /dev\n');
    expect(r.out).to.match(/dest open "\/dev\/flood": Failure/);
    expect(r.out).to.match(/remote mkdir "\/dev\/d": Failure/);
    expect(r.out).to.match(/dest open "\/dev\/shm\/flood": Failure/);
    const listing = r.stdout.split('sftp> ls -1 /dev')[1] ?? '';
    expect(listing).not.to.contain('flood');
    expect(r.out).to.contain('/dev/null');
  });

  it("gives a user with shared_bytes a volume of that size: a flood stops at the quota, another user's /shared still works", async function () {
    expect(isMountPoint(join(state, 'shared', 'alice'))).to.equal(true);
    expect(isMountPoint(join(state, 'shared', 'bob'))).to.equal(false);
    expect(statSync(join(state, 'shared', 'alice')).mode & 0o777).to.equal(0o700);
    expect(readdirSync(join(state, 'shared', 'alice'))).to.deep.equal([]);
    const big = join(state, 'big.bin');
    spawnSync('dd', ['if=/dev/urandom', `of=${big}`, 'bs=1M', `count=${QUOTA_MIB * 2}`], { stdio: 'ignore' });
    const flood = await sftp('alice', `put ${big} /shared/flood.bin\n`);
    // SFTP v3 has no "disk full" code: sftp-server's ENOSPC reaches the client as a Failure.
    expect(flood.status, flood.out).to.not.equal(0);
    expect(flood.out).to.match(/Failure|write remote/i);
    // What the flood holds on the host (its blocks: its size may count a hole past a failed write).
    const onHost = existsSync(join(state, 'shared', 'alice', 'flood.bin')) ? statSync(join(state, 'shared', 'alice', 'flood.bin')).blocks * 512 : 0;
    expect(onHost).to.be.at.most(QUOTA_MIB * 1024 * 1024);
    expect(onHost).to.be.above(QUOTA_MIB * 0.5 * 1024 * 1024);
    const df = spawnSync('df', ['-B1', '--output=avail', join(state, 'shared', 'alice')], { encoding: 'utf8' })
      .stdout.split('\n')[1]
      ?.trim();
    expect(Number(df), 'the volume is full').to.be.below(1024 * 1024);
    // The host's state disk is untouched and bob writes as much as he likes.
    const bob = await sftp('bob', `put ${big} /shared/bob.bin\nls -1 /shared\n`);
    expect(bob.status, bob.out).to.equal(0);
    expect(statSync(join(state, 'shared', 'bob', 'bob.bin')).size).to.equal(QUOTA_MIB * 2 * 1024 * 1024);
    expect(bob.out).to.contain('/shared/before.txt');
    // alice frees space and writes again.
    const again = await sftp('alice', 'rm /shared/flood.bin\nput /etc/hostname /shared/small.txt\n');
    expect(again.status, again.out).to.equal(0);
  });

  it('grows a volume when the quota grows, and moves files of a plain folder into a new volume', async function () {
    // Growing a mounted volume needs CAP_SYS_RESOURCE (online resize2fs); unmounted (a host
    // reboot, or gcd's next mount) it always works: that is the case shown here.
    await vols.close();
    spawnSync('umount', [join(state, 'shared', 'alice')]);
    const grown = new SharedVolumes({ stateDir: state, maxSessions: MAX, quotaMiB: (owner) => (owner === 'alice' ? QUOTA_MIB * 2 : QUOTA_MIB) });
    await grown.prepare('alice');
    const size = (dir: string): number => Number(spawnSync('df', ['-B1', '--output=size', dir], { encoding: 'utf8' }).stdout.split('\n')[1]?.trim());
    expect(size(join(state, 'shared', 'alice'))).to.be.above(QUOTA_MIB * 1.5 * 1024 * 1024);
    // bob now gets a quota too: his existing files are copied into it.
    rmSync(join(state, 'shared', 'bob', 'bob.bin'));
    await grown.prepare('bob');
    expect(isMountPoint(join(state, 'shared', 'bob'))).to.equal(true);
    expect(readdirSync(join(state, 'shared', 'bob'))).to.deep.equal(['before.txt']);
    await grown.close();
    vols = new SharedVolumes({ stateDir: state, maxSessions: MAX });
    await vols.open();
  });

  it(`refuses a user's sessions beyond ${MAX} at once; one ends, the next is served`, async function () {
    const sock = sftpGateSocket(join(state, 'shared', 'bob'));
    const open = async (): Promise<{ s: Socket; closed: Promise<void> }> => {
      const s = connect(sock);
      s.on('error', () => undefined);
      const closed = new Promise<void>((r) => s.once('close', () => r()));
      await new Promise<void>((r) => s.once('connect', () => r()));
      return { s, closed };
    };
    const held = [];
    for (let i = 0; i < MAX; i++) held.push(await open());
    // One `flock` holds each session's slot for as long as its sandbox runs.
    const servers = (): string =>
      spawnSync('pgrep', ['-f', '-c', `^flock -n -E 75 ${sftpSlotsDir(join(state, 'shared', 'bob'))}`], { encoding: 'utf8' }).stdout.trim();
    // Each held connection gets its sandbox (an idle sftp-server waiting for SFTP's init); polled,
    // not slept on: a loaded machine starts them late.
    await until(() => Number(servers()) === MAX);
    expect(Number(servers())).to.equal(MAX);
    // Beyond the cap: the gate closes the connection at once, no sandbox is made.
    const extra = await open();
    const refused = await Promise.race([extra.closed.then(() => true), sleep(5000).then(() => false)]);
    expect(refused, 'connection beyond the cap closed').to.equal(true);
    expect(Number(servers())).to.equal(MAX);
    // A flood of connections changes nothing.
    const flood = await Promise.all(Array.from({ length: 20 }, () => open()));
    await Promise.all(flood.map((f) => f.closed));
    expect(Number(servers())).to.equal(MAX);
    // One session ends: its slot is free again and a real SFTP session works.
    held[0]?.s.destroy();
    await held[0]?.closed;
    await until(() => Number(servers()) === MAX - 1);
    const r = await sftp('bob', 'ls -1 /shared\n');
    expect(r.status, r.out).to.equal(0);
    for (const h of held) h.s.destroy();
    // The sandboxes end with their connections.
    const deadline = Date.now() + 10_000;
    while (Number(servers()) > 0 && Date.now() < deadline) await sleep(100);
    expect(Number(servers())).to.equal(0);
  });

  it('a session outlives nothing: sftp-server exits when its connection closes (no process left)', async function () {
    const child = spawn('socat', ['-', `UNIX-CONNECT:${sftpGateSocket(join(state, 'shared', 'alice'))}`], { stdio: ['pipe', 'ignore', 'ignore'] });
    await until(() => spawnSync('pgrep', ['-f', `^flock -n -E 75 ${sftpSlotsDir(join(state, 'shared', 'alice'))}`]).status === 0);
    expect(spawnSync('pgrep', ['-f', `^flock -n -E 75 ${sftpSlotsDir(join(state, 'shared', 'alice'))}`]).status).to.equal(0);
    child.kill();
    await new Promise((r) => child.once('exit', r));
    const deadline = Date.now() + 10_000;
    while (spawnSync('pgrep', ['-f', `^flock -n -E 75 ${sftpSlotsDir(join(state, 'shared', 'alice'))}`]).status === 0 && Date.now() < deadline)
      await sleep(100);
    expect(spawnSync('pgrep', ['-f', `^flock -n -E 75 ${sftpSlotsDir(join(state, 'shared', 'alice'))}`]).status).to.equal(1);
  });
});

/** Waits until cond holds, at most 15 s; the caller's expect then says what did not happen. */
async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!cond() && Date.now() < deadline) await sleep(100);
}
