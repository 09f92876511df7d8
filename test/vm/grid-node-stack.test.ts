import { expect } from 'chai';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiServer } from '../../src/api/server.js';
import { settings as loadedSettings } from '../../src/config/settings.js';
import { QemuDriver } from '../../src/drivers/qemu/qemu-driver.js';
import { NodeApi } from '../../src/grid/node-api.js';
import { openNodeStack, type NodeStack } from '../../src/grid/node-stack.js';
import { NodeTokens } from '../../src/grid/node-tokens.js';
import { startServerGrid, type ServerGrid } from '../../src/grid/server-grid.js';
import { defaultImageSource } from '../../src/image/default-image.js';
import { QemuHeadnodeManager } from '../../src/headnodes/manager.js';
import type { GuestChannels, GuestIdentity } from '../../src/headnodes/types.js';
import type { JobRecord } from '../../src/queue/job.js';
import { keysFor } from '../../src/queue/keys.js';
import { Scheduler, type SchedulerOptions } from '../../src/scheduler/scheduler.js';
import { Layout } from '../../src/vm/layout.js';
import { redisOptions, startTestRedis, type TestRedis } from '../helpers/env.js';
import { freePort } from '../helpers/grid-transfer.js';
import { until } from '../helpers/gcd-process.js';
import { testSpec } from '../helpers/jobs.js';

/**
 * The grid under TCG on one machine, loopback only: a real headnode and its QEMU driver on the
 * "server" (scheduler that runs no jobs, NBD exporter and node API from startServerGrid), and a
 * node built by openNodeStack with its own state and RAM folders (real QemuDriver): a job
 * submitted on the server runs in a real clone on the node, started from the snapshot the
 * node's cache fetched, and its output and stage-out land in the headnode.
 */
class HeadnodeChannels implements GuestChannels {
  constructor(private readonly dir: string) {}
  async open(identity: GuestIdentity): Promise<string> {
    return join(this.dir, `${identity.vmId}.sock`);
  }
  async close(): Promise<void> {}
}

const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

describe('grid: a job runs in a real clone on a node built by openNodeStack @vm', function () {
  this.timeout(900_000);
  const imageStateDir = process.env.GC_STATE_DIR ?? '/var/tmp/copper-test';
  const hn = 'gw';
  let root: string;
  let r: TestRedis;
  let mgr: QemuHeadnodeManager;
  let drv: QemuDriver;
  let grid: ServerGrid;
  let nodeApi: NodeApi;
  let server: Scheduler;
  let stack: NodeStack;
  let node: Scheduler;
  let unsubscribe: () => void;
  let nodeLayout: Layout;
  const ramDirs = [`/dev/shm/gw-vm-server-${process.pid}`, `/dev/shm/gw-vm-node-${process.pid}`];
  const inHeadnode = (script: string): Promise<string> =>
    mgr.withRunning(hn, async (h) => {
      const st = await h.agent.run('/bin/sh', ['-c', script], { timeoutMs: 60_000 });
      if (st.exitCode !== 0) throw new Error(`headnode: ${script}: ${st.err?.toString() ?? ''}`);
      return st.out?.toString() ?? '';
    });

  before(async function () {
    this.timeout(900_000);
    root = await mkdtemp(join(tmpdir(), 'gw-vm-'));
    const serverDirs = { stateDir: join(root, 'server'), ramDir: ramDirs[0] };
    const nodeDirs = { stateDir: join(root, 'node'), ramDir: ramDirs[1] };
    nodeLayout = new Layout(nodeDirs);
    r = await startTestRedis();
    const channels = new HeadnodeChannels(join(serverDirs.stateDir, 'run', 'channels'));
    mgr = new QemuHeadnodeManager({
      settings: serverDirs,
      channels,
      images: defaultImageSource({ stateDir: imageStateDir, log: (l) => process.stderr.write(`      image: ${l}\n`) }),
    });
    drv = new QemuDriver({ settings: serverDirs, channels, headnodes: mgr });
    await mgr.create({ name: hn, owner: 'alice', group: 'alice', memMiB: 384, vcpus: 1, diskGiB: 4 });
    await mgr.start(hn);
    await inHeadnode('mkdir -p /root/w && echo from-the-headnode > /root/w/input.txt; sync');

    const tokens = new NodeTokens(serverDirs.stateDir);
    const token = await tokens.mint('gw-n1');
    grid = await startServerGrid({
      settings: { ...serverDirs, keyPrefix: 'copper', nbdAddr: `127.0.0.1:${await freePort()}` },
      redis: r.client,
      tokens,
      driver: drv,
    });
    const common = (o: Partial<SchedulerOptions>): SchedulerOptions => ({
      redis: r.client,
      connection: redisOptions(r.target),
      keys: keysFor('copper'),
      serverName: 'srv',
      driver: grid.driver,
      stateDir: serverDirs.stateDir,
      capacity: { ncpus: 2, memMiB: 2048 },
      killDelayMs: 2000,
      lockDurationMs: 30_000,
      ...o,
    });
    server = new Scheduler(common({ dispatch: false }));
    await server.start();
    const guest = new ApiServer({ scheduler: server, cli: async () => ({ stdout: '', stderr: '', exitCode: 0 }) });
    nodeApi = new NodeApi({
      addr: '127.0.0.1:0',
      tokens,
      store: server.store,
      driver: grid.driver,
      guestApi: () => guest.handle,
      dependents: (job) => server.reviewDependentsOf(job),
      incomingDir: join(serverDirs.stateDir, 'grid', 'incoming'),
      undeliveredDir: join(serverDirs.stateDir, 'undelivered'),
      maxOutputBytes: 64 * 1024 * 1024,
    });
    const url = await nodeApi.listen();

    // The node as gcd --node will compose it: one call, settings as gcd reads them.
    const nodeSettings = {
      ...loadedSettings(),
      ...nodeDirs,
      keyPrefix: 'copper',
      nbdAddr: undefined,
      serverUrl: url,
      nodeToken: token,
      nodeControlAddr: '127.0.0.1:0',
    };
    stack = await openNodeStack(nodeSettings, r.client, 'gw-n1');
    node = new Scheduler(common({ stateDir: nodeDirs.stateDir, ...stack.schedulerOptions }));
    unsubscribe = node.events.subscribe((t) => {
      if (t.event === 'run') void node.store.update(t.jobId, { execHost: 'gw-n1' });
    });
    await node.start();
    await r.client.hset('copper:node:gw-n1', 'controlUrl', await stack.startControl(node.localRunning()));
  });

  after(async function () {
    this.timeout(180_000);
    unsubscribe?.();
    await node?.close();
    await stack?.close();
    await server?.close();
    await nodeApi?.close();
    await grid?.close();
    await drv?.close();
    for (const id of (await drv?.listSnapshots().catch(() => [])) ?? []) await drv.releaseSnapshot(id);
    await mgr?.destroy(hn).catch(() => undefined);
    await mgr?.close();
    await r?.stop();
    for (const d of ramDirs) await rm(d, { recursive: true, force: true });
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('runs in a clone of the cached snapshot; output and stage-out reach the headnode; the cache is emptied', async () => {
    const [job] = await server.submit([
      testSpec({
        argv: ['sh', '-c', 'cat input.txt; hostname; echo made-on-the-node > result.txt'],
        cwd: '/root/w',
        user: 'root',
        group: 'root',
        headnode: hn,
        env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
        resources: { ncpus: 1, memMiB: 0 },
      }),
    ]);
    const snap = job.snapshotId!;
    const done = await until(
      'job F',
      async (): Promise<JobRecord | undefined> => {
        const j = await server.store.get(job.id);
        return j.state === 'F' ? j : undefined;
      },
      600_000,
    );
    expect(done.execHost).to.equal('gw-n1');
    expect(done.exitStatus, done.comment).to.equal(0);
    const fetch = stack.cache.stats().fetches.find((f) => f.snapshotId === snap);
    expect(fetch, 'the snapshot came to the node over NBD').to.not.equal(undefined);
    process.stderr.write(
      `      snapshot fetched in ${fetch!.ms} ms, ${(fetch!.bytes / 1048576).toFixed(1)} MiB (RAM ${(fetch!.ramBytes / 1048576).toFixed(1)} MiB)\n`,
    );
    const out = await inHeadnode(`cat /root/w/STDIN.o${done.seq}; cat /root/w/result.txt`);
    expect(out).to.match(/^from-the-headnode\n[^\n]+\nmade-on-the-node\n$/);
    expect(stack.cache.cached()).to.deep.equal([]);
    expect(await exists(nodeLayout.snapshot(snap).ramFile)).to.equal(false);
    expect(grid.exporter!.list()).to.not.include(snap);
    expect(await drv.listSnapshots()).to.not.include(snap);
  });

  it("an afterok dependent of a job that ran on the node reads the parent's staged-out file", async () => {
    const spec = (script: string): ReturnType<typeof testSpec> =>
      testSpec({ argv: ['sh', '-c', script], cwd: '/root/w', user: 'root', group: 'root', headnode: hn, env: { PATH: '/usr/bin:/bin' } });
    const [parent] = await server.submit([spec('echo written-by-the-parent > parent.txt')]);
    const [child] = await server.submit([spec('cat parent.txt')], { depend: [{ type: 'afterok', jobIds: [parent.id] }] });
    const ended = (id: string): Promise<JobRecord> =>
      until(
        `${id} F`,
        async () => {
          const j = await server.store.get(id);
          return j.state === 'F' ? j : undefined;
        },
        600_000,
      );
    const p = await ended(parent.id);
    const c = await ended(child.id);
    expect([p.execHost, c.execHost]).to.deep.equal(['gw-n1', 'gw-n1']);
    expect(c.exitStatus, c.comment).to.equal(0);
    expect(await inHeadnode(`cat /root/w/STDIN.o${c.seq}`)).to.equal('written-by-the-parent\n');
  });
});
