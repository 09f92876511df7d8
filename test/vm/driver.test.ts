import { expect } from 'chai';
import { access, chown, cp, link, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { CloneHandle, ExecResult, ExecSpec } from '../../src/drivers/driver.js';
import { QemuDriver } from '../../src/drivers/qemu/qemu-driver.js';
import { pidAlive } from '../../src/vm/vm-process.js';
import { DriverError, NotFoundError, StateError, UsageError } from '../../src/errors.js';
import { defaultImageSource } from '../../src/image/default-image.js';
import { QemuHeadnodeManager } from '../../src/headnodes/manager.js';
import type { GuestChannels, GuestIdentity } from '../../src/headnodes/types.js';

/**
 * End to end under TCG: one 512 MiB headnode booted in before(), snapshotted, forked.
 * The image is cached in $GC_STATE_DIR (default /var/tmp/copper-test), shared with image-boot.
 */

/** Records open/close; returns the socket path QEMU's guestfwd would connect to. */
class FakeChannels implements GuestChannels {
  readonly open_ = new Map<string, GuestIdentity>();
  constructor(private readonly dir: string) {}
  async open(identity: GuestIdentity): Promise<string> {
    this.open_.set(identity.vmId, identity);
    return join(this.dir, `${identity.vmId}.sock`);
  }
  async close(vmId: string): Promise<void> {
    this.open_.delete(vmId);
  }
}

const execFileP = promisify(execFile);

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

/** A python3 server holding a counter and a random token in RAM (port 7777). */
const COUNTER = [
  'import os, socket',
  'token = os.urandom(8).hex(); n = 41',
  's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  "s.bind(('127.0.0.1', 7777)); s.listen()",
  'while True:',
  '    c, _ = s.accept(); n += 1',
  "    c.send(f'{token} {n}'.encode()); c.close()",
].join('\n');
const ASK_COUNTER = "import socket; s = socket.create_connection(('127.0.0.1', 7777)); print(s.recv(100).decode())";

describe('QemuDriver end to end under TCG @vm', function () {
  this.timeout(180_000);
  const imageStateDir = process.env.GC_STATE_DIR ?? '/var/tmp/copper-test';
  let root: string;
  let settings: { stateDir: string; ramDir: string };
  let channels: FakeChannels;
  let mgr: QemuHeadnodeManager;
  let drv: QemuDriver;
  /** Shared by every driver that snapshots the headnode (see QemuDriverOptions.streams). */
  const streams = new Map<string, Promise<void>>();
  let snapId: string;
  let token: string;
  let seq = 0;
  const cloneTimes: number[] = [];

  const hn = 'hn';
  /** Run a command in the headnode through its agent. */
  const inHeadnode = async (script: string): Promise<string> =>
    mgr.withRunning(hn, async (h) => {
      const st = await h.agent.run('/bin/sh', ['-c', script], { timeoutMs: 60_000 });
      if (st.exitCode !== 0) throw new Error(`headnode: ${script}: ${st.err?.toString() ?? ''}`);
      return st.out?.toString() ?? '';
    });

  /** Clones of the running test, destroyed after it whatever happened. */
  const clonesOfTest: string[] = [];
  afterEach(async () => {
    for (const id of clonesOfTest.splice(0)) await drv.destroy(id);
  });

  const newClone = async (snapshotId = snapId): Promise<CloneHandle> => {
    const id = `t${++seq}`;
    clonesOfTest.push(id);
    const t0 = Date.now();
    const c = await drv.clone({ cloneId: id, snapshotId, hostname: `${hn}-${id}`, ncpus: 1 });
    cloneTimes.push(Date.now() - t0);
    return c;
  };

  const run = async (c: CloneHandle, argv: string[], extra: Partial<ExecSpec> = {}): Promise<{ r: ExecResult; out: string; err: string }> => {
    const out = join(root, `${c.cloneId}.${++seq}.out`);
    const err = join(root, `${c.cloneId}.${seq}.err`);
    const cmd = await drv.exec(c, { argv, cwd: '/root', env: { PATH: '/usr/bin:/bin' }, user: 'root', stdoutFile: out, stderrFile: err, ...extra });
    const r = await cmd.done;
    const o = await readFile(extra.stdoutFile ?? out, 'utf8');
    const e = await readFile(extra.stderrFile ?? err, 'utf8').catch(() => '');
    return { r, out: o, err: e };
  };

  before(async function () {
    this.timeout(900_000); // the first run builds the image
    root = await mkdtemp(join(tmpdir(), 'gcd-'));
    settings = { stateDir: join(root, 'st'), ramDir: `/dev/shm/gcd-test-${process.pid}` };
    channels = new FakeChannels(join(settings.stateDir, 'run', 'channels'));
    mgr = new QemuHeadnodeManager({
      settings,
      channels,
      images: defaultImageSource({ stateDir: imageStateDir, log: (l) => process.stderr.write(`      image: ${l}\n`) }),
    });
    drv = new QemuDriver({ settings, channels, headnodes: mgr, streams });
    await mgr.create({ name: hn, owner: 'alice', group: 'alice', memMiB: 512, vcpus: 1, diskGiB: 4 });
    const t0 = Date.now();
    const info = await mgr.start(hn);
    process.stderr.write(`      headnode booted in ${Date.now() - t0} ms (${info.accel})\n`);
    await inHeadnode(
      [
        'useradd -m -s /bin/sh alice',
        'echo before > /root/before.txt',
        `cat > /root/counter.py <<'EOF'\n${COUNTER}\nEOF`,
        'setsid python3 /root/counter.py </dev/null >/dev/null 2>&1 &',
        'for i in $(seq 100); do python3 -c "import socket; socket.create_connection((\'127.0.0.1\', 7777))" 2>/dev/null && break; sleep 0.2; done',
      ].join('\n'),
    );
    // That probe connection counted: the server now holds n = 42.
    const snap = await drv.snapshot(hn);
    snapId = snap.id;
    process.stderr.write(`      snapshot paused the headnode ${snap.pauseMs} ms\n`);
    token = (await inHeadnode(`python3 -c "${ASK_COUNTER}"`)).trim().split(' ')[0]!;
    // Changes after the snapshot: a clone must not see them.
    await inHeadnode('echo after > /root/after.txt; echo changed > /root/before.txt');
  });

  after(async function () {
    this.timeout(120_000);
    if (cloneTimes.length) process.stderr.write(`      clone spawn->ready ms: ${cloneTimes.join(', ')}\n`);
    await drv?.close();
    for (const id of (await drv?.listSnapshots().catch(() => [])) ?? []) await drv.releaseSnapshot(id);
    await mgr?.destroy(hn).catch(() => undefined);
    await mgr?.destroy('cold').catch(() => undefined);
    await mgr?.destroy('duo').catch(() => undefined);
    await mgr?.close();
    await rm(settings.ramDir, { recursive: true, force: true });
    await rm(root, { recursive: true, force: true });
  });

  it('forks disk and memory: state before the snapshot is there, changes after it are not', async () => {
    const c = await newClone();
    const { r, out } = await run(c, ['/bin/sh', '-c', `cat /root/before.txt; test -e /root/after.txt && echo AFTER; hostname; python3 -c "${ASK_COUNTER}"`]);
    expect(r).to.deep.include({ exitCode: 0, signal: null });
    expect(r.usage?.cputSec, "the job's own CPU time, from its cgroup").to.be.a('number');
    const lines = out.trim().split('\n');
    expect(lines[0]).to.equal('before');
    expect(out).not.to.contain('AFTER');
    expect(lines[1]).to.equal(`${hn}-${c.cloneId}`);
    // Same process (token), same memory: the headnode's next answer after the snapshot was 43,
    // the clone's own next answer is 43 too, since it continues from n = 42.
    expect(lines[2]).to.equal(`${token} 43`);
    await drv.destroy(c.cloneId);
  });

  it('keeps clone writes private: not in the headnode, not in a sibling clone', async () => {
    const [a, b] = await Promise.all([newClone(), newClone()]);
    expect((await run(a, ['/bin/sh', '-c', 'echo a > /root/from-a.txt; sync'])).r.exitCode).to.equal(0);
    expect((await run(b, ['/bin/sh', '-c', 'echo b > /root/from-b.txt; sync'])).r.exitCode).to.equal(0);
    const seenByA = await run(a, ['/bin/ls', '/root']);
    const seenByB = await run(b, ['/bin/ls', '/root']);
    expect(seenByA.out).to.contain('from-a.txt').and.not.contain('from-b.txt');
    expect(seenByB.out).to.contain('from-b.txt').and.not.contain('from-a.txt');
    const inHead = await inHeadnode('ls /root');
    expect(inHead).not.to.contain('from-a').and.not.contain('from-b');
    // Clones have their own identity.
    const ids = await Promise.all([a, b].map(async (c) => (await run(c, ['/bin/cat', '/etc/machine-id'])).out.trim()));
    expect(ids[0]).to.match(/^[0-9a-f]{32}$/);
    expect(ids[0]).not.to.equal(ids[1]);
    await Promise.all([drv.destroy(a.cloneId), drv.destroy(b.cloneId)]);
  });

  it('reports exit codes, signals, separate and joined output, scripts, cwd and user', async () => {
    const c = await newClone();
    const e = await run(c, ['/bin/sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(e.r).to.deep.include({ exitCode: 7, signal: null });
    expect(e.out).to.equal('out\n');
    expect(e.err).to.equal('err\n');
    const s = await run(c, ['/bin/sh', '-c', 'kill -TERM $$']);
    expect(s.r).to.deep.include({ exitCode: null, signal: 15 });
    const joined = join(root, 'joined.txt');
    const j = await run(c, ['/bin/sh', '-c', 'echo one; echo two >&2'], { stdoutFile: joined, stderrFile: joined });
    expect(j.out).to.equal('one\ntwo\n');
    const sc = await run(c, [], {
      script: '#!/bin/sh\necho "script $1 $2 in $(pwd) as $(id -un)"\n',
      scriptArgs: ['x', 'y'],
      cwd: '/home/alice',
      user: 'alice',
    });
    expect(sc.out).to.equal('script x y in /home/alice as alice\n');
    await drv.destroy(c.cloneId);
  });

  // REPRO=N runs it N times (a race between a stop and a clone taking its identity hid here).
  for (let rep = 0; rep < (Number(process.env.REPRO) || 1); rep++)
    it('kills a running command by its process group', async () => {
      const c = await newClone();
      const out = join(root, 'kill.out');
      const cmd = await drv.exec(c, {
        argv: ['/bin/sh', '-c', 'sleep 1000 & sleep 1000; echo never'],
        cwd: '/',
        env: {},
        user: 'root',
        stdoutFile: out,
        stderrFile: out,
      });
      await new Promise((r) => setTimeout(r, 1500));
      await cmd.kill('TERM');
      const r = await cmd.done;
      expect(r.signal).to.equal(15);
      // The group got the signal; under a loaded TCG host a killed sleep may take a moment to be reaped.
      let left = '';
      for (let i = 0; i < 10 && left !== '0'; i++) {
        if (i) await new Promise((r) => setTimeout(r, 500));
        left = (await run(c, ['/bin/sh', '-c', 'ps -eo stat=,comm= | grep -v "^Z" | grep -c " sleep$" || true'])).out.trim();
      }
      expect(left).to.equal('0');
      await drv.destroy(c.cloneId);
      // Stopped at once, while the fresh clone is still taking its identity: the stop waits for
      // the command's process group, then ends it.
      const early = await newClone();
      const cmd2 = await drv.exec(early, {
        argv: ['/bin/sh', '-c', 'sleep 1000 & sleep 1000; echo never'],
        cwd: '/',
        env: {},
        user: 'root',
        stdoutFile: out,
        stderrFile: out,
      });
      await cmd2.kill('TERM');
      expect((await cmd2.done).signal).to.equal(15);
      const ran = await run(early, ['/bin/sh', '-c', 'ps -eo comm | grep -c "^sleep" || true']);
      expect(ran.out).to.equal('0\n');
    });

  it('brings back more than 16 MiB of stdout whole', async () => {
    const c = await newClone();
    const { r, out } = await run(c, ['/usr/bin/seq', '1', '2500000']);
    expect(r.exitCode).to.equal(0);
    expect(out.length).to.be.greaterThan(16 * 1024 * 1024);
    const expected = Array.from({ length: 2_500_000 }, (_, i) => String(i + 1)).join('\n') + '\n';
    expect(out === expected).to.equal(true);
    await drv.destroy(c.cloneId);
  });

  it('leaves nothing behind after destroy, and destroy is idempotent', async () => {
    const c = await newClone();
    const pid = drv.clonePid(c.cloneId)!;
    expect(pidAlive(pid, c.cloneId)).to.equal(true);
    expect(channels.open_.has(c.cloneId)).to.equal(true);
    const cloneDir = join(settings.stateDir, 'clones', c.cloneId);
    const sockDir = join(settings.stateDir, 'run', 'c', c.cloneId);
    expect(await exists(join(cloneDir, 'disk.qcow2'))).to.equal(true);
    await drv.destroy(c.cloneId);
    expect(pidAlive(pid, c.cloneId)).to.equal(false);
    expect(await exists(cloneDir)).to.equal(false);
    expect(await exists(sockDir)).to.equal(false);
    expect(channels.open_.has(c.cloneId)).to.equal(false);
    await drv.destroy(c.cloneId);
    // A clone has no RAM file of its own: only snapshot RAM files are on tmpfs.
    const ram = await readdir(settings.ramDir, { recursive: true });
    expect(ram.filter((f) => f.includes(c.cloneId))).to.deep.equal([]);
    const gone = await drv
      .exec(c, { argv: ['true'], cwd: '/', env: {}, user: 'root', stdoutFile: '/dev/null', stderrFile: '/dev/null' })
      .catch((e: unknown) => e);
    expect(gone).to.be.instanceOf(NotFoundError);
  });

  it('sweeps clones not in the keep set', async () => {
    const a = await newClone();
    const b = await newClone();
    const swept = await drv.sweep(new Set([b.cloneId]));
    expect(swept).to.deep.equal([a.cloneId]);
    expect(await exists(join(settings.stateDir, 'clones', a.cloneId))).to.equal(false);
    expect((await run(b, ['/bin/true'])).r.exitCode).to.equal(0);
    await drv.destroy(b.cloneId);
  });

  it('delivers a host file into the headnode with its owner', async () => {
    const src = join(root, 'deliver.bin');
    const data = Buffer.alloc(3 * 1024 * 1024 + 17, 'z');
    await writeFile(src, data);
    await drv.deliverFile(hn, '/home/alice/out.o1', src, 'alice');
    const st = await inHeadnode('stat -c "%U %s" /home/alice/out.o1; ls /home/alice');
    expect(st.split('\n')[0]).to.equal(`alice ${data.length}`);
    expect(st).not.to.contain('copper-');
  });

  it("refuses to deliver where the job's account may not write (/etc, /root): issue 13 item 8b", async () => {
    const src = join(root, 'evil.txt');
    await writeFile(src, 'alice::0:0::/root:/bin/sh\n');
    for (const dest of ['/etc/passwd', '/etc/cron.d/copper-evil', '/root/.profile']) {
      const e = await drv.deliverFile(hn, dest, src, 'alice').then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e, dest).to.be.instanceOf(DriverError);
      expect((e as Error).message, dest).to.match(/account alice may not write/);
    }
    const st = await inHeadnode('grep -c "^alice::0:0" /etc/passwd || true; ls -a /etc/cron.d /root; ls /var/lib/copper/deliver | wc -l');
    expect(st.split('\n')[0]).to.equal('0');
    expect(st).not.to.contain('copper-');
    expect(st.trim().split('\n').pop()).to.equal('0', 'no staged copy left');
  });

  it('takes a second snapshot after the background stream, and releases snapshots', async () => {
    const s2 = await drv.snapshot(hn);
    expect(await drv.listSnapshots()).to.include.members([snapId, s2.id]);
    const c = await newClone(s2.id);
    const { out } = await run(c, ['/bin/cat', '/root/before.txt', '/root/after.txt']);
    expect(out).to.equal('changed\nafter\n');
    await drv.destroy(c.cloneId);
    await drv.releaseSnapshot(s2.id);
    expect(await drv.listSnapshots()).not.to.include(s2.id);
    expect(await exists(join(settings.stateDir, 'snapshots', s2.id))).to.equal(false);
    expect(await exists(join(settings.ramDir, 'snapshots', `${s2.id}.ram`))).to.equal(false);
    // The headnode's own chain is short again: active overlay + base.
    const files = (await readdir(join(settings.stateDir, 'headnodes', hn))).filter((f) => f.startsWith('disk-'));
    expect(files.length).to.be.at.most(2);
  });

  it('rejects bad input with typed errors', async () => {
    const err = async (p: Promise<unknown>): Promise<unknown> =>
      p.then(
        () => expect.fail('resolved'),
        (e: unknown) => e,
      );
    expect(await err(drv.snapshot('nosuch'))).to.be.instanceOf(NotFoundError);
    expect(await err(drv.snapshot('../etc'))).to.be.instanceOf(UsageError);
    expect(await err(drv.clone({ cloneId: 'x1', snapshotId: 'nosuch.1', hostname: 'x', ncpus: 1 }))).to.be.instanceOf(NotFoundError);
    expect(await err(drv.deliverFile('nosuch', '/tmp/x', '/etc/hostname', 'alice'))).to.be.instanceOf(NotFoundError);
    await mgr.create({ name: 'cold', owner: 'alice', group: 'alice', memMiB: 256, vcpus: 1, diskGiB: 4 });
    expect(await err(drv.snapshot('cold'))).to.be.instanceOf(StateError);
    const dup = await newClone();
    expect(await err(drv.clone({ cloneId: dup.cloneId, snapshotId: snapId, hostname: 'x', ncpus: 1 }))).to.be.instanceOf(StateError);
    await drv.destroy(dup.cloneId);
  });

  it('reports a QEMU that cannot start as a DriverError and cleans up', async () => {
    // A copy of the snapshot whose kernel is gone: QEMU exits at once.
    const bad = `${snapId}x`;
    await cp(join(settings.stateDir, 'snapshots', snapId), join(settings.stateDir, 'snapshots', bad), { recursive: true });
    // The copy is root's; the clone's QEMU runs as the snapshot's uid (vm-uid.ts): give it the same owners.
    for (const f of await readdir(join(settings.stateDir, 'snapshots', snapId))) {
      const st = await stat(join(settings.stateDir, 'snapshots', snapId, f));
      await chown(join(settings.stateDir, 'snapshots', bad, f), st.uid, st.gid);
    }
    await link(join(settings.ramDir, 'snapshots', `${snapId}.ram`), join(settings.ramDir, 'snapshots', `${bad}.ram`));
    const metaPath = join(settings.stateDir, 'snapshots', bad, 'meta.json');
    const meta = JSON.parse(await readFile(metaPath, 'utf8')) as { vm: { kernel?: string } };
    meta.vm.kernel = '/nonexistent/vmlinux';
    await writeFile(metaPath, JSON.stringify(meta));
    const e = await drv.clone({ cloneId: 'broken', snapshotId: bad, hostname: 'b', ncpus: 1 }).then(
      () => expect.fail('cloned'),
      (x: unknown) => x,
    );
    expect(e).to.be.instanceOf(DriverError);
    expect(String(e)).to.match(/failed to start.*nonexistent/s);
    expect(await exists(join(settings.stateDir, 'clones', 'broken'))).to.equal(false);
    expect(await exists(join(settings.stateDir, 'run', 'c', 'broken'))).to.equal(false);
    expect(channels.open_.has('broken')).to.equal(false);
    await drv.releaseSnapshot(bad);
    // A snapshot missing a file is refused before QEMU starts (QEMU would make a zeroed RAM file).
    const partial = `${snapId}y`;
    await cp(join(settings.stateDir, 'snapshots', snapId), join(settings.stateDir, 'snapshots', partial), { recursive: true });
    const e2 = await drv.clone({ cloneId: 'partial', snapshotId: partial, hostname: 'p', ncpus: 1 }).catch((x: unknown) => x);
    expect(e2).to.be.instanceOf(NotFoundError);
    expect(String(e2)).to.match(/incomplete/);
    expect(await exists(join(settings.ramDir, 'snapshots', `${partial}.ram`))).to.equal(false);
    await drv.releaseSnapshot(partial);
  });

  it("gives a clone the vCPUs its job asks for (-l ncpus), hot-plugged up to the headnode's slots", async () => {
    const id = `t${++seq}`;
    clonesOfTest.push(id);
    const c = await drv.clone({ cloneId: id, snapshotId: snapId, hostname: `${hn}-${id}`, ncpus: 3 });
    const r = await run(c, ['/bin/sh', '-c', 'nproc; cat /sys/devices/system/cpu/online; hostname']);
    expect(r.out).to.equal(`3\n0-2\n${hn}-${id}\n`);
    // The snapshot's own count when the job asks for nothing else.
    const plain = await newClone();
    expect((await run(plain, ['nproc'])).out).to.equal('1\n');
    // More than the headnode's slots (8 by default): refused, nothing left behind.
    const e = await drv.clone({ cloneId: 'toomany', snapshotId: snapId, hostname: 'toomany', ncpus: 9 }).catch((x: unknown) => x);
    expect(e).to.be.instanceOf(DriverError);
    expect(String(e)).to.match(/at most 8/);
    expect(await exists(join(settings.stateDir, 'clones', 'toomany'))).to.equal(false);
  });

  it('gives a clone fewer vCPUs than its headnode by unplugging them before it runs', async () => {
    await mgr.create({ name: 'duo', owner: 'alice', group: 'alice', memMiB: 256, vcpus: 2, maxVcpus: 2, diskGiB: 4 });
    await mgr.start('duo');
    const s = await drv.snapshot('duo');
    expect(s.vcpus).to.equal(2);
    expect(s.maxVcpus).to.equal(2);
    try {
      const one = `t${++seq}`;
      clonesOfTest.push(one);
      const c1 = await drv.clone({ cloneId: one, snapshotId: s.id, hostname: one, ncpus: 1 });
      expect((await run(c1, ['/bin/sh', '-c', 'nproc; cat /sys/devices/system/cpu/present'])).out).to.equal('1\n0\n');
      const two = `t${++seq}`;
      clonesOfTest.push(two);
      const c2 = await drv.clone({ cloneId: two, snapshotId: s.id, hostname: two });
      expect((await run(c2, ['nproc'])).out).to.equal('2\n');
    } finally {
      for (const id of clonesOfTest.splice(0)) await drv.destroy(id);
      await drv.releaseSnapshot(s.id);
      await mgr.destroy('duo');
    }
  });

  it('forks memory and disk as well with the RAM copied inside the pause (GC_SNAPSHOT_RAM=copy)', async () => {
    // The method for kernels without userfaultfd write-protect on shared memory (< 5.19).
    const copying = new QemuDriver({ settings, channels, headnodes: mgr, streams, snapshotRam: 'copy' });
    await inHeadnode('echo copied > /root/copy.txt');
    const s = await copying.snapshot(hn);
    try {
      await inHeadnode('rm /root/copy.txt');
      const c = await newClone(s.id);
      expect((await run(c, ['/bin/cat', '/root/copy.txt'])).out).to.equal('copied\n');
      const [tok, n] = (await run(c, ['python3', '-c', ASK_COUNTER])).out.trim().split(' ');
      expect(tok, 'the RAM-only token of the process started before the first snapshot').to.equal(token);
      expect(Number(n)).to.be.greaterThan(42);
    } finally {
      await copying.close();
      await drv.releaseSnapshot(s.id);
    }
  });

  it('survives a full disk while snapshotting: DriverError, headnode resumed, nothing left', async function () {
    // A 1 MiB tmpfs over the snapshot RAM folder: the RAM copy runs out of space mid-pause.
    const ramSnaps = join(settings.ramDir, 'snapshots');
    const mounted = await execFileP('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', ramSnaps]).then(
      () => true,
      () => false,
    );
    if (!mounted) this.skip();
    const before = await drv.listSnapshots();
    const snapDirsBefore = await readdir(join(settings.stateDir, 'snapshots'));
    try {
      const e = await drv.snapshot(hn).then(
        () => expect.fail('snapshot succeeded on a full disk'),
        (x: unknown) => x,
      );
      expect(e).to.be.instanceOf(DriverError);
      expect(String(e)).to.match(/No space left/);
      const status = await mgr.withRunning(hn, (h) => h.vm.qmp.execute<{ status: string }>('query-status'));
      expect(status.status).to.equal('running');
      expect(await inHeadnode('echo alive')).to.equal('alive\n');
      expect(await drv.listSnapshots()).to.deep.equal(before);
      expect(await readdir(join(settings.stateDir, 'snapshots'))).to.deep.equal(snapDirsBefore);
      expect(await readdir(ramSnaps)).to.deep.equal([]);
    } finally {
      await execFileP('umount', [ramSnaps]);
    }
    // With space again, snapshots work (after the background stream of the failed attempt).
    const ok = await drv.snapshot(hn);
    const c = await newClone(ok.id);
    expect((await run(c, ['/bin/cat', '/root/after.txt'])).out).to.equal('after\n');
    await drv.destroy(c.cloneId);
    await drv.releaseSnapshot(ok.id);
  });
});
