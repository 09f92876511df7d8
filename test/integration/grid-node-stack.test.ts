import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ApiServer } from '../../src/api/server.js';
import type { CloneHandle, CloneOptions, SnapshotInfo } from '../../src/drivers/driver.js';
import { FakeDriver, type FakeDriverOptions } from '../../src/drivers/fake/fake-driver.js';
import { NotFoundError } from '../../src/errors.js';
import { NodeApi } from '../../src/grid/node-api.js';
import { openNodeStack, type NodeStack } from '../../src/grid/node-stack.js';
import { NodeTokens } from '../../src/grid/node-tokens.js';
import { startServerGrid, type ServerGrid } from '../../src/grid/server-grid.js';
import { snapExportKey } from '../../src/grid/snapshot-export-info.js';
import type { JobRecord } from '../../src/queue/job.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { Layout } from '../../src/vm/layout.js';
import type { SnapshotMeta } from '../../src/vm/snapshots/types.js';
import { SnapshotStore } from '../../src/vm/snapshots/store.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { exists, freePort, writeSnapshotFolder } from '../helpers/grid-transfer.js';
import { until } from '../helpers/gcd-process.js';
import { testSpec } from '../helpers/jobs.js';
import { schedulerOptions } from '../helpers/scheduler.js';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;

/**
 * The server's test double, except that each snapshot is a real snapshot folder (qemu-img
 * overlay on a shared base, sparse RAM file, meta.json) that the real exporter serves over
 * NBD; releasing one removes the folder, as the QEMU driver's store does. Output it cannot
 * deliver: paths naming 'undeliverable'.
 */
class FolderSnapshots extends FakeDriver {
  readonly taken: Array<{ id: string; at: number }> = [];
  constructor(
    o: FakeDriverOptions,
    private readonly layout: Layout,
    private readonly base: string,
  ) {
    super(o);
  }
  override async snapshot(headnode: string): Promise<SnapshotInfo> {
    const info = await super.snapshot(headnode);
    await writeSnapshotFolder(this.layout, info.id, {
      base: this.base,
      stateBytes: 999,
      stateByte: 3,
      ramMiB: 32,
      ramByte: 5,
      ramDataAtMiB: 4,
      meta: { headnode, owner: 'alice', group: 'users', vm: { accel: 'tcg', memMiB: 32, vcpus: 1 } },
    });
    this.taken.push({ id: info.id, at: Date.now() });
    return info;
  }
  override async releaseSnapshot(snapshotId: string): Promise<void> {
    await super.releaseSnapshot(snapshotId);
    await new SnapshotStore(this.layout).release(snapshotId);
  }
  override async deliverFile(headnode: string, guestPath: string, hostFile: string): Promise<void> {
    if (guestPath.includes('undeliverable')) throw new NotFoundError(`headnode ${headnode} refuses ${guestPath}`);
    return super.deliverFile(headnode, guestPath, hostFile);
  }
}

/** The node's clones: the test double, but a clone starts only from a snapshot the cache put in the node's own folder. */
class CachedClones extends FakeDriver {
  readonly startedFrom: string[] = [];
  constructor(
    o: FakeDriverOptions,
    private readonly layout: Layout,
  ) {
    super(o);
  }
  override async clone(o: CloneOptions): Promise<CloneHandle> {
    const sp = this.layout.snapshot(o.snapshotId);
    const meta = JSON.parse(await readFile(sp.meta, 'utf8')) as SnapshotMeta;
    if (meta.id !== o.snapshotId || !(await exists(sp.ramFile)) || !(await exists(sp.disk)))
      throw new NotFoundError(`snapshot ${o.snapshotId} is not in the node's cache`);
    this.snapshots.add(o.snapshotId);
    this.startedFrom.push(o.snapshotId);
    return super.clone(o);
  }
}

/**
 * A server (scheduler that runs no jobs, real NBD exporter through startServerGrid, node API)
 * and a node built with openNodeStack (real SnapshotCache fetching over NBD; the test double
 * in place of QEMU for the clones), on one real redis-server, over loopback.
 */
describe('grid node stack: a job runs on a node built by openNodeStack (real redis-server, qemu-storage-daemon, loopback HTTP)', function () {
  this.timeout(90_000);
  let r: TestRedis;
  let server: Scheduler;
  let node: Scheduler;
  let serverDriver: FolderSnapshots;
  let inner: CachedClones;
  let grid: ServerGrid;
  let nodeApi: NodeApi;
  let stack: NodeStack;
  let unsubscribe: () => void;
  let deliverRoot: string;
  let serverLayout: Layout;
  let nodeLayout: Layout;
  let nodeDir: string;
  const ramDirs = [`/dev/shm/gw-stack-server-${process.pid}`, `/dev/shm/gw-stack-node-${process.pid}`];

  before(async () => {
    r = await startTestRedis();
    deliverRoot = join(r.dir, 'headnodes');
    const serverDir = join(r.dir, 'server');
    nodeDir = join(r.dir, 'node');
    for (const d of [deliverRoot, serverDir, nodeDir]) await mkdir(d);
    serverLayout = new Layout({ stateDir: serverDir, ramDir: ramDirs[0] });
    nodeLayout = new Layout({ stateDir: nodeDir, ramDir: ramDirs[1] });
    const base = join(r.dir, 'base.qcow2');
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', base, '8M']);
    await execFileP('qemu-io', ['-c', 'write -P 0x5a 0 1M', base]);

    serverDriver = new FolderSnapshots({ deliverRoot, headnodes: new Set(['hn1']) }, serverLayout, base);
    const tokens = new NodeTokens(serverDir);
    const token = await tokens.mint('n1');
    grid = await startServerGrid({
      settings: { stateDir: serverDir, ramDir: ramDirs[0], keyPrefix: 'copper', nbdAddr: `127.0.0.1:${await freePort()}` },
      redis: r.client,
      tokens,
      driver: serverDriver,
    });
    expect(grid.exporter, 'exporter started for GC_NBD_ADDR').to.not.equal(undefined);
    server = new Scheduler(schedulerOptions(r, serverDriver, { stateDir: serverDir, dispatch: false, driver: grid.driver }));
    await server.start();
    const guest = new ApiServer({ scheduler: server, cli: async () => ({ stdout: '', stderr: '', exitCode: 0 }) });
    nodeApi = new NodeApi({
      addr: '127.0.0.1:0',
      tokens,
      store: server.store,
      driver: grid.driver,
      guestApi: () => guest.handle,
      dependents: (job) => server.reviewDependentsOf(job),
      incomingDir: join(serverDir, 'grid', 'incoming'),
      undeliveredDir: join(serverDir, 'undelivered'),
      maxOutputBytes: MiB,
    });
    const url = await nodeApi.listen();

    inner = new CachedClones({ deliverRoot: join(nodeDir, 'nowhere'), headnodes: new Set() }, nodeLayout);
    stack = await openNodeStack(
      {
        stateDir: nodeDir,
        ramDir: ramDirs[1],
        keyPrefix: 'copper',
        nbdAddr: undefined,
        serverUrl: url,
        nodeToken: token,
        nodeControlAddr: '127.0.0.1:0',
        maxOutputMiB: 1,
        vmGid: 0,
        guestAllow: '',
        snapshotRam: 'auto',
      },
      r.client,
      'n1',
      { inner: () => inner },
    );
    node = new Scheduler(schedulerOptions(r, inner, { stateDir: nodeDir, ...stack.schedulerOptions }));
    // execHost as grid-nodes' dispatcher will write it.
    unsubscribe = node.events.subscribe((t) => {
      if (t.event === 'run') void node.store.update(t.jobId, { execHost: 'n1' });
    });
    await node.start();
    await r.client.hset('copper:node:n1', 'controlUrl', await stack.startControl(node.localRunning()));
  });

  after(async () => {
    unsubscribe?.();
    await node?.close();
    await stack?.close();
    await server?.close();
    await nodeApi?.close();
    await grid?.close();
    await serverDriver?.close();
    await r?.stop();
    for (const d of ramDirs) await rm(d, { recursive: true, force: true });
  });

  const finished = (id: string, what: string): Promise<JobRecord> =>
    until(
      what,
      async () => {
        const j = await server.store.get(id);
        return j.state === 'F' ? j : undefined;
      },
      30_000,
    );

  it('fetches the snapshot through the cache, relays the output home, then frees cache, export and snapshot', async () => {
    const [job] = await server.submit([testSpec({ argv: ['sh', '-c', 'echo hello-from-n1; echo oops >&2'] })]);
    const snap = job.snapshotId!;
    const done = await finished(job.id, 'job F');
    expect(done.execHost).to.equal('n1');
    expect(done.exitStatus).to.equal(0);
    expect(inner.startedFrom).to.include(snap);
    expect(serverDriver.clones.size, 'no clone on the server').to.equal(0);
    const fetch = stack.cache.stats().fetches.find((f) => f.snapshotId === snap);
    expect(fetch, 'the snapshot came over NBD').to.not.equal(undefined);
    expect(fetch!.ramBytes).to.be.at.least(MiB);
    expect(await readFile(join(deliverRoot, 'hn1', `/tmp/STDIN.o${done.seq}`), 'utf8')).to.equal('hello-from-n1\n');
    expect(await readFile(join(deliverRoot, 'hn1', `/tmp/STDIN.e${done.seq}`), 'utf8')).to.equal('oops\n');
    // The last job of the snapshot: the node's copy, the export and the server's folder go.
    await until('snapshot released', async () => ((await exists(serverLayout.snapshot(snap).dir)) ? undefined : true), 10_000);
    expect(stack.cache.cached()).to.deep.equal([]);
    expect(await exists(nodeLayout.snapshot(snap).dir)).to.equal(false);
    expect(await exists(nodeLayout.snapshot(snap).ramFile)).to.equal(false);
    expect(grid.exporter!.list()).to.not.include(snap);
    expect(await r.client.exists(snapExportKey('copper', snap))).to.equal(0);
  });

  it('an afterok dependent of a job that ran on the node is released by the server in a fresh snapshot', async () => {
    const [parent] = await server.submit([testSpec({ argv: ['sh', '-c', 'sleep 1; echo parent'] })]);
    const [child] = await server.submit([testSpec({ argv: ['sh', '-c', 'echo child'] })], { depend: [{ type: 'afterok', jobIds: [parent.id] }] });
    const submittedIn = child.snapshotId!;
    const p = await finished(parent.id, 'parent F');
    const c = await finished(child.id, 'child F');
    expect(p.execHost).to.equal('n1');
    expect(c.execHost).to.equal('n1');
    expect(c.exitStatus).to.equal(0);
    expect(c.comment ?? '').to.not.match(/submission snapshot/);
    expect(c.snapshotId, 'the child ran in another snapshot than its submission one').to.not.equal(submittedIn);
    const fresh = serverDriver.taken.find((t) => t.id === c.snapshotId);
    expect(fresh, 'the fresh snapshot was taken by the server').to.not.equal(undefined);
    expect(fresh!.at).to.be.at.least(p.endedAt ?? Infinity);
    expect(inner.startedFrom).to.include(c.snapshotId);
    expect(await server.store.dependentsOf(parent.id)).to.deep.equal([]);
  });

  it('output the headnode does not take is kept on the node, and the comment names it', async () => {
    const [job] = await server.submit([testSpec({ name: 'undeliverable', argv: ['sh', '-c', 'echo lost'] })]);
    const done = await finished(job.id, 'job F');
    expect(done.comment ?? '').to.include(`kept on node n1 at ${join(nodeDir, 'undelivered', job.id)}`);
    expect(await readFile(join(nodeDir, 'undelivered', job.id, `undeliverable.o${done.seq}`), 'utf8')).to.equal('lost\n');
  });
});
