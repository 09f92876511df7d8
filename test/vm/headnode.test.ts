import { expect } from 'chai';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pidAlive } from '../../src/vm/vm-process.js';
import { NotFoundError, StateError, UsageError } from '../../src/errors.js';
import { defaultImageSource } from '../../src/image/default-image.js';
import { QemuHeadnodeManager, type ImageSource } from '../../src/headnodes/manager.js';
import { latestGeneration, pruneGenerations } from '../../src/vm/disk-generations.js';
import { Layout } from '../../src/vm/layout.js';
import { createOverlay } from '../../src/vm/qemu-img.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import type { GuestChannels, GuestIdentity, HeadnodeSpec } from '../../src/headnodes/types.js';

class FakeChannels implements GuestChannels {
  readonly open_ = new Set<string>();
  constructor(private readonly dir: string) {}
  async open(identity: GuestIdentity): Promise<string> {
    this.open_.add(identity.vmId);
    return join(this.dir, `${identity.vmId}.sock`);
  }
  async close(vmId: string): Promise<void> {
    this.open_.delete(vmId);
  }
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

describe('QemuHeadnodeManager @vm', function () {
  this.timeout(180_000);
  const imageStateDir = process.env.GC_STATE_DIR ?? '/var/tmp/copper-test';
  let root: string;
  let settings: { stateDir: string; ramDir: string };
  let channels: FakeChannels;
  let images: ImageSource;
  const managers: QemuHeadnodeManager[] = [];
  const manager = (): QemuHeadnodeManager => {
    const m = new QemuHeadnodeManager({ settings, channels, images, stopTimeoutMs: 20_000 });
    managers.push(m);
    return m;
  };
  const spec = (over: Partial<HeadnodeSpec> = {}): HeadnodeSpec => ({
    name: 'h1', owner: 'bob', group: 'bob', memMiB: 256, vcpus: 1, diskGiB: 4, ...over,
  });

  before(async function () {
    this.timeout(900_000);
    root = await mkdtemp(join(tmpdir(), 'gch-'));
    settings = { stateDir: join(root, 'st'), ramDir: `/dev/shm/gch-test-${process.pid}` };
    channels = new FakeChannels(join(settings.stateDir, 'run', 'channels'));
    images = defaultImageSource({ stateDir: imageStateDir, log: (l) => process.stderr.write(`      image: ${l}\n`) });
    await images.defaultBoot('warmup'); // builds the image once, outside any test's timeout
  });

  after(async function () {
    this.timeout(60_000);
    const m = manager();
    for (const h of await m.list()) await m.destroy(h.name);
    for (const x of managers) await x.close();
    await rm(settings.ramDir, { recursive: true, force: true });
    await rm(root, { recursive: true, force: true });
  });

  it('validates specs and refuses duplicates and unknown names', async () => {
    const m = manager();
    const bad = async (s: HeadnodeSpec): Promise<unknown> => m.create(s).then(() => expect.fail('created'), (e: unknown) => e);
    expect(await bad(spec({ name: 'Bad_Name' }))).to.be.instanceOf(UsageError);
    expect(await bad(spec({ name: '../x' }))).to.be.instanceOf(UsageError);
    expect(await bad(spec({ owner: 'ro ot' }))).to.be.instanceOf(UsageError);
    expect(await bad(spec({ memMiB: 16 }))).to.be.instanceOf(UsageError);
    expect(await bad(spec({ vcpus: 0 }))).to.be.instanceOf(UsageError);
    expect(await bad(spec({ diskGiB: 1 }))).to.be.instanceOf(UsageError); // smaller than the 4 GiB image
    expect(await bad(spec({ image: '/nonexistent.qcow2' }))).to.be.instanceOf(UsageError);
    expect(await exists(join(settings.stateDir, 'headnodes', 'h1'))).to.equal(false);
    const info = await m.create(spec({ name: 'dup' }));
    expect(info.state).to.equal('stopped');
    expect(await bad(spec({ name: 'dup' }))).to.be.instanceOf(StateError);
    for (const op of [m.get('nosuch'), m.start('nosuch'), m.stop('nosuch'), m.destroy('nosuch')]) {
      expect(await op.then(() => undefined, (e: unknown) => e)).to.be.instanceOf(NotFoundError);
    }
    await m.destroy('dup');
    expect(await exists(join(settings.stateDir, 'headnodes', 'dup'))).to.equal(false);
  });

  it('starts, survives a gcd restart, stops, and reports a crash with its reason', async () => {
    const m1 = manager();
    await m1.create(spec());
    const t0 = Date.now();
    const up = await m1.start('h1');
    process.stderr.write(`      256 MiB headnode booted in ${Date.now() - t0} ms\n`);
    expect(up.state).to.equal('running');
    expect(up.accel).to.equal('tcg');
    const pid = up.pid!;
    expect(pidAlive(pid, 'h1')).to.equal(true);
    expect(channels.open_.has('h1')).to.equal(true);
    expect((await m1.list()).map((h) => [h.name, h.state])).to.deep.equal([['h1', 'running']]);
    expect(await exists(join(settings.ramDir, 'headnodes', 'h1.ram'))).to.equal(true);
    const rec = JSON.parse(await readFile(join(settings.stateDir, 'headnodes', 'h1', 'headnode.json'), 'utf8')) as { want: string };
    expect(rec.want).to.equal('running');

    // gcd dies in the middle of a snapshot (headnode paused), restarts: the old manager lets go,
    // a new one finds the same QEMU and resumes it.
    await m1.withRunning('h1', (h) => h.vm.qmp.execute('stop'));
    await m1.close();
    expect(pidAlive(pid, 'h1')).to.equal(true);
    const m2 = manager();
    expect((await m2.get('h1')).state).to.equal('crashed'); // before reattach it is unaccounted for
    await m2.reattach();
    const again = await m2.get('h1');
    expect(again.state).to.equal('running');
    expect(again.pid).to.equal(pid);
    const st = await m2.withRunning('h1', (h) => h.vm.qmp.execute<{ status: string }>('query-status'));
    expect(st.status).to.equal('running');
    const hostname = await m2.withRunning('h1', async (h) => (await h.agent.run('/bin/hostname', [])).out?.toString().trim());
    expect(hostname).to.equal('h1');

    // Graceful stop: the guest powers off; nothing of the running VM is left.
    const down = await m2.stop('h1');
    expect(down.state).to.equal('stopped');
    expect(pidAlive(pid, 'h1')).to.equal(false);
    expect(await exists(join(settings.ramDir, 'headnodes', 'h1.ram'))).to.equal(false);
    expect(await exists(join(settings.stateDir, 'run', 'h', 'h1'))).to.equal(false);
    expect(channels.open_.has('h1')).to.equal(false);
    const err = await m2.withRunning('h1', async () => undefined).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(StateError);

    // Start again (the disk kept its state), then kill QEMU behind gcd's back.
    const up2 = await m2.start('h1');
    process.kill(up2.pid!, 'SIGKILL');
    for (let i = 0; i < 50 && (await m2.get('h1')).state === 'running'; i++) await sleep(100);
    const crashed = await m2.get('h1');
    expect(crashed.state).to.equal('crashed');
    expect(crashed.reason).to.match(/SIGKILL/);

    // A restarted gcd reports it crashed too, with a reason.
    const m3 = manager();
    await m3.reattach();
    const seen = await m3.get('h1');
    expect(seen.state).to.equal('crashed');
    expect(seen.reason).to.be.a('string').and.not.equal('');

    await m3.destroy('h1');
    expect(await exists(join(settings.stateDir, 'headnodes', 'h1'))).to.equal(false);
  });

  it('after a crash mid-snapshot, boots from the newest overlay and prunes only unused ones', async () => {
    const paths = new Layout(settings).headnode('gen');
    await mkdir(paths.stateDir, { recursive: true });
    const base = join(root, 'base.qcow2');
    await promisify(execFile)('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
    await createOverlay(paths.disk(0), base);
    await createOverlay(paths.disk(1), paths.disk(0)); // QEMU switched; the record still says 0
    await writeFile(paths.disk(2), 'not a qcow2'); // junk is never adopted
    expect(await latestGeneration(paths, 0)).to.equal(1);
    await pruneGenerations(paths, 1);
    // disk-0 is still in disk-1's chain; disk-2 is not in it and goes.
    expect((await readdir(paths.stateDir)).sort()).to.deep.equal(['disk-0.qcow2', 'disk-1.qcow2']);
    await rm(paths.stateDir, { recursive: true, force: true });
  });
});
