import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CloneHandle } from '../../src/drivers/driver.js';
import { Layout } from '../../src/vm/layout.js';
import type { CloneStartOptions as QemuCloneOptions, LiveCloneAccess } from '../../src/vm/clones/types.js';
import type { SnapshotMeta } from '../../src/vm/snapshots/types.js';
import { DriverError, NotFoundError, QuotaError } from '../../src/errors.js';
import type { LiveHeadnode } from '../../src/headnodes/manager.js';
import type { HeadnodeSpec } from '../../src/headnodes/types.js';
import { ClusterService, type ClusterHeadnodes } from '../../src/clusters/service.js';
import type { ClusterVms as ClusterDriver } from '../../src/clusters/vms.js';

/**
 * The service's bookkeeping without QEMU: all or nothing, quotas, kills, TTL and recovery,
 * over a stand-in driver whose "VMs" are real processes named like QEMUs (`-name <vmId>`), so
 * that liveness checks work and a leak would show as a process left behind.
 */
class FakeDriver implements ClusterDriver {
  readonly layout: Layout;
  readonly procs = new Map<string, ChildProcess>();
  readonly snapshots = new Set<string>();
  readonly destroyed: string[] = [];
  readonly released: string[] = [];
  readonly scripts: string[][] = [];
  failClone: string | undefined;
  reattachable = new Set<string>();
  private n = 0;

  constructor(root: string) {
    this.layout = new Layout({ stateDir: join(root, 'vm'), ramDir: join(root, 'ram') });
  }
  private start(vmId: string): void {
    // One process whose argv has `-name <vmId>`, as QEMU's has (pidAlive looks for it).
    this.procs.set(vmId, spawn(process.execPath, ['-e', 'setTimeout(() => {}, 600000)', '--', '-name', vmId], { stdio: 'ignore' }));
  }
  async snapshot(hn: string) {
    const id = `${hn}.s${++this.n}`;
    this.snapshots.add(id);
    return { id, headnode: hn, createdAt: Date.now(), pauseMs: 1 };
  }
  async snapshotMeta(id: string): Promise<SnapshotMeta> {
    return { version: 1, id, headnode: 'hn', owner: 'alice', group: 'physics', createdAt: 0, pauseMs: 0, vm: { accel: 'tcg', memMiB: 256, vcpus: 1 } };
  }
  async releaseSnapshot(id: string) {
    this.released.push(id);
    this.snapshots.delete(id);
  }
  async listSnapshots() {
    return [...this.snapshots];
  }
  async sweep() {
    return [];
  }
  async snapshotClone(_vmId: string, _origin: SnapshotMeta, id: string) {
    return { id, pauseMs: 1 };
  }
  async releaseSnapshotRam() {}
  async sweepTransfers() {}
  async clone(o: QemuCloneOptions): Promise<CloneHandle> {
    if (o.cloneId === this.failClone) throw new DriverError(`QEMU for ${o.cloneId} failed to start`);
    this.start(o.cloneId);
    return { cloneId: o.cloneId, snapshotId: o.snapshotId, headnode: 'hn' };
  }
  async withClone<T>(id: string, fn: (c: LiveCloneAccess) => Promise<T>): Promise<T> {
    if (!this.procs.has(id)) throw new NotFoundError(`no running clone '${id}'`);
    const agent = {
      run: async (_p: string, args: string[]) => {
        this.scripts.push([id, ...args.slice(3)]);
        return { exited: true, exitCode: 0, signal: null, out: null, err: null, outTruncated: false, errTruncated: false };
      },
    };
    const vm = { qmp: { execute: async () => ({}) }, pid: this.procs.get(id)!.pid };
    return fn({ agent, vm } as unknown as LiveCloneAccess);
  }
  async reattachClone(id: string): Promise<CloneHandle | undefined> {
    if (!this.reattachable.has(id)) return undefined;
    this.start(id);
    return { cloneId: id, snapshotId: 's', headnode: 'hn' };
  }
  async destroy(id: string) {
    this.destroyed.push(id);
    const p = this.procs.get(id);
    this.procs.delete(id);
    if (p && p.exitCode === null && p.signalCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await gone;
    }
  }
  async detach() {
    for (const p of this.procs.values()) p.kill('SIGKILL');
    this.procs.clear();
  }
  clonePid(id: string) {
    return this.procs.get(id)?.pid;
  }
  cloneTimings() {
    return undefined;
  }
}

function fakeHeadnodes(): ClusterHeadnodes & { preps: number } {
  const spec: HeadnodeSpec = { name: 'hn', owner: 'alice', group: 'physics', memMiB: 256, vcpus: 1, diskGiB: 4 };
  const h = {
    preps: 0,
    async spec(name: string) {
      if (name !== 'hn') throw new NotFoundError(`no headnode named '${name}'`);
      return spec;
    },
    async withRunning<T>(_name: string, fn: (h: LiveHeadnode) => Promise<T>): Promise<T> {
      const qmp = {
        execute: async (cmd: string) => (cmd === 'qom-list' ? [{ name: 'nic1' }] : cmd === 'qom-get' ? '52:54:0c:00:00:01' : {}),
      };
      const agent = {
        run: async () => {
          h.preps++;
          return { exited: true, exitCode: 0, signal: null, out: null, err: null };
        },
      };
      return fn({ vm: { qmp }, agent } as unknown as LiveHeadnode);
    },
  };
  return h;
}

describe('clusters: the service over a stand-in driver', function () {
  this.timeout(20_000);
  let root: string;
  let drv: FakeDriver;
  let svc: ClusterService | undefined;
  const HN = { kind: 'headnode' as const, vmId: 'hn', headnode: 'hn' };

  const open = async (maxPerUser = 8, tickMs = 1_000_000): Promise<ClusterService> =>
    ClusterService.open({ stateDir: root, driver: drv, headnodes: fakeHeadnodes(), quota: () => ({ maxPerUser }), tickMs, concurrency: 2 });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'copper-svc-'));
    drv = new FakeDriver(root);
  });
  afterEach(async () => {
    await svc?.close();
    svc = undefined;
    await drv.detach();
    await rm(root, { recursive: true, force: true });
  });

  it('makes a batch: ids, addresses, identity scripts, registry', async () => {
    svc = await open();
    const made = await svc.clone(HN, { n: 3, ttlSec: 60 });
    expect(made.map((c) => [c.id, c.name, c.generation, c.address, c.state])).to.deep.equal([
      [1, 'hn-c1', 1, '10.100.0.2', 'running'], [2, 'hn-c2', 1, '10.100.0.3', 'running'], [3, 'hn-c3', 1, '10.100.0.4', 'running'],
    ]);
    expect(made.every((c) => c.expiresAt !== undefined)).to.equal(true);
    // Each clone got MAC, address/24, its env (rank in the batch), hostname in one script.
    const s2 = drv.scripts.find((s) => s[0] === 'hn.c2')!;
    expect(s2.slice(1, 3)).to.deep.equal(['52:54:0c:00:00:03', '10.100.0.3/24']);
    expect(s2[3]).to.contain('COPPER_CLONE_ID=2\n').and.contain('COPPER_BATCH_RANK=1\nCOPPER_BATCH_SIZE=3\n');
    expect(s2[4]).to.equal('hn-c2');
    const reg = JSON.parse(await readFile(join(root, 'clusters', 'registry.json'), 'utf8')) as { clusters: Array<{ clones: Array<{ state: string }> }> };
    expect(reg.clusters[0]!.clones.map((c) => c.state)).to.deep.equal(['running', 'running', 'running']);
    expect(svc.whoami({ kind: 'clone', vmId: 'hn.c3', headnode: 'hn' })).to.deep.include({ id: 3, generation: 1, parent: 'hn' });
  });

  it('all or nothing: a clone that fails takes its whole batch and the snapshot with it', async () => {
    svc = await open();
    drv.failClone = 'hn.c2';
    let err: unknown;
    await svc.clone(HN, { n: 3 }).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.equal('QEMU for hn.c2 failed to start');
    expect(await svc.list('hn')).to.deep.equal([]);
    expect(drv.procs.size, 'no VM left').to.equal(0);
    expect([...drv.destroyed].sort()).to.deep.equal(['hn.c1', 'hn.c2', 'hn.c3']);
    expect(drv.snapshots.size, 'the batch snapshot is released').to.equal(0);
  });

  it('a quota refusal creates nothing and takes no snapshot', async () => {
    svc = await open(3);
    await svc.clone(HN, { n: 2 });
    let err: unknown;
    await svc.clone(HN, { n: 2 }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(QuotaError);
    expect((err as Error).message).to.contain('max_clones=3 for user alice');
    expect(drv.snapshots.size).to.equal(1);
    expect((await svc.list('hn')).map((c) => c.id)).to.deep.equal([1, 2]);
  });

  it('kill: unknown ids kill nothing; --generation and --all; snapshots go with their last clone', async () => {
    svc = await open();
    await svc.clone(HN, { n: 2 });
    let err: unknown;
    await svc.kill(HN, { ids: [1, 7] }).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.equal('gc kill: no clone 7 in the cluster of hn (its clones: 1, 2); nothing killed');
    expect(drv.procs.size).to.equal(2);
    expect((await svc.kill(HN, { generation: 2 })).killed).to.deep.equal([]);
    expect((await svc.kill(HN, { ids: [2] })).killed.map((c) => c.id)).to.deep.equal([2]);
    expect(drv.snapshots.size).to.equal(1);
    expect((await svc.kill(HN, { all: true })).killed.map((c) => c.id)).to.deep.equal([1]);
    expect(drv.snapshots.size).to.equal(0);
    expect(drv.procs.size).to.equal(0);
  });

  it('a clone that kills itself gets its answer first; its VM goes a moment later', async () => {
    svc = await open();
    await svc.clone(HN, { n: 2 });
    const { killed } = await svc.kill({ kind: 'clone', vmId: 'hn.c1', headnode: 'hn' }, { all: true });
    expect(killed.map((c) => [c.id, c.state])).to.deep.equal([[1, 'killing'], [2, 'killing']]);
    expect([...drv.procs.keys()], 'the caller still runs while its answer leaves').to.deep.equal(['hn.c1']);
    await new Promise((r) => setTimeout(r, 1500));
    expect(drv.procs.size).to.equal(0);
    expect(await svc.list('hn')).to.deep.equal([]);
  });

  it('TTL: expired clones are destroyed by the clock; a clone whose VM died is cleaned up', async () => {
    svc = await open(8, 50);
    await svc.clone(HN, { n: 1, ttlSec: 1 });
    await svc.clone(HN, { n: 1 });
    drv.procs.get('hn.c2')!.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 1500));
    expect(await svc.list('hn')).to.deep.equal([]);
    expect(drv.procs.size).to.equal(0);
  });

  it('recovery after a crash: re-attach what answers, destroy the rest, release unknown snapshots', async () => {
    svc = await open();
    await svc.clone(HN, { n: 3 });
    await svc.close(); // gcd gone; in real life the VMs run on
    svc = undefined;
    const path = join(root, 'clusters', 'registry.json');
    const reg = JSON.parse(await readFile(path, 'utf8')) as { clusters: Array<{ clones: Array<{ id: number; state: string }> }> };
    reg.clusters[0]!.clones.find((c) => c.id === 3)!.state = 'creating'; // died while being made
    await writeFile(path, JSON.stringify(reg));
    drv.snapshots.add('hn.orphan');
    drv.reattachable = new Set(['hn.c1', 'hn.c3']); // c2's QEMU is gone
    svc = await open();
    expect((await svc.list('hn')).map((c) => [c.id, c.state])).to.deep.equal([[1, 'running']]);
    expect(drv.destroyed.sort()).to.deep.equal(['hn.c2', 'hn.c3']);
    expect(drv.released).to.contain('hn.orphan');
    expect(drv.snapshots.size, 'the snapshot clone 1 needs stays').to.equal(1);
  });

  it('dropping the headnode destroys its cluster and frees its network', async () => {
    svc = await open();
    await svc.clone(HN, { n: 2 });
    await svc.dropHeadnode('hn');
    expect(drv.procs.size).to.equal(0);
    const reg = JSON.parse(await readFile(join(root, 'clusters', 'registry.json'), 'utf8')) as { clusters: unknown[]; snapshots: unknown[] };
    expect(reg).to.deep.include({ clusters: [], snapshots: [] });
  });
});
