import { expect } from 'chai';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiServer } from '../../src/api/server.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { NodeApi } from '../../src/grid/node-api.js';
import { NodeTokens } from '../../src/grid/node-tokens.js';
import { nodeRelay, type NodeRelay } from '../../src/grid/node-relay.js';
import type { NodeDriver, SnapshotCacheLike } from '../../src/grid/node-driver.js';
import { jobsOf, RemoteJobControl } from '../../src/grid/remote-jobs.js';
import { registryControlUrl } from '../../src/grid/server-relay.js';
import type { JobRecord } from '../../src/queue/job.js';
import { ADMIN } from '../../src/scheduler/actor.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { testSpec } from '../helpers/jobs.js';
import { schedulerOptions } from '../helpers/scheduler.js';
import { callJson } from '../../src/grid/json-http.js';

/** Stands in for grid-snapshots' cache: "fetching" makes the snapshot exist for the node's driver. */
class CopyingCache implements SnapshotCacheLike {
  readonly holders = new Map<string, Set<string>>();
  constructor(private readonly local: FakeDriver) {}
  async acquire(snapshotId: string, holder: string): Promise<string> {
    this.local.snapshots.add(snapshotId);
    const s = this.holders.get(snapshotId) ?? new Set<string>();
    s.add(holder);
    this.holders.set(snapshotId, s);
    return snapshotId;
  }
  async release(snapshotId: string, holder: string): Promise<void> {
    const s = this.holders.get(snapshotId);
    s?.delete(holder);
    if (s && s.size === 0) {
      this.holders.delete(snapshotId);
      this.local.snapshots.delete(snapshotId);
    }
  }
}

/**
 * A server scheduler (runs no jobs: its jobs go to the node) and a node scheduler on one real
 * redis-server, the node's NodeDriver talking to the server's NodeApi over loopback HTTP and the
 * server's job control reaching the node's control listener. The node writes execHost when a
 * job goes R, as grid-nodes' dispatcher does.
 */
describe('grid relay: a job runs on a node, its control and output go through the relay (real redis-server, loopback HTTP)', function () {
  this.timeout(90_000);
  let r: TestRedis;
  let server: Scheduler;
  let node: Scheduler;
  let serverDriver: FakeDriver;
  let inner: FakeDriver;
  let nodeApi: NodeApi;
  let relay: NodeRelay;
  let nodeDriver: NodeDriver;
  let remote: RemoteJobControl;
  let tokens: NodeTokens;
  let unsubscribe: () => void;
  let deliverRoot: string;

  before(async () => {
    r = await startTestRedis();
    deliverRoot = join(r.dir, 'headnodes');
    mkdirSync(deliverRoot);
    const serverDir = join(r.dir, 'server');
    const nodeDir = join(r.dir, 'node');
    mkdirSync(serverDir);
    mkdirSync(nodeDir);
    serverDriver = new FakeDriver({ deliverRoot, headnodes: new Set(['hn1']) });
    tokens = new NodeTokens(serverDir);
    const token = await tokens.mint('n1');
    remote = new RemoteJobControl({ tokens, controlUrlOf: registryControlUrl(r.client, 'copper'), store: jobsOf(() => server), self: 'srv' });
    server = new Scheduler(schedulerOptions(r, serverDriver, { stateDir: serverDir, dispatch: false, remote }));
    await server.start();
    const guest = new ApiServer({ scheduler: server, cli: async () => ({ stdout: '', stderr: '', exitCode: 0 }) });
    nodeApi = new NodeApi({
      addr: '127.0.0.1:0',
      tokens,
      store: server.store,
      driver: serverDriver,
      guestApi: () => guest.handle,
      incomingDir: join(serverDir, 'grid', 'incoming'),
      undeliveredDir: join(serverDir, 'undelivered'),
      maxOutputBytes: 1024 * 1024,
    });
    const url = await nodeApi.listen();

    relay = nodeRelay({ stateDir: nodeDir, serverUrl: url, nodeToken: token, nodeControlAddr: '127.0.0.1:0' }, 'n1');
    inner = new FakeDriver({ deliverRoot: join(nodeDir, 'nowhere'), headnodes: new Set() });
    nodeDriver = relay.driver(inner, new CopyingCache(inner));
    node = new Scheduler(schedulerOptions(r, inner, { stateDir: nodeDir, driver: nodeDriver }));
    unsubscribe = node.events.subscribe((t) => {
      if (t.event === 'run') void node.store.update(t.jobId, { execHost: 'n1' });
    });
    await node.start();
    const controlUrl = await relay.startControl(node.localRunning(), nodeDriver);
    await r.client.hset('copper:node:n1', 'controlUrl', controlUrl);
  });

  after(async () => {
    unsubscribe?.();
    await node?.close();
    await relay?.close();
    await server?.close();
    await nodeApi?.close();
    await serverDriver?.close();
    await inner?.close();
    await r?.stop();
  });

  async function runningOnNode(argv: string[]): Promise<JobRecord> {
    const [job] = await server.submit([testSpec({ argv })]);
    return until(
      'step 1',
      async () => {
        const j = await server.store.get(job.id);
        return j.state === 'R' && j.execHost === 'n1' && j.cloneId ? j : undefined;
      },
      20_000,
    );
  }

  it('gcqpeek and gcqexec reach the clone on the node; gcqsig ends the job; its output and stage-out come home; the snapshot is freed', async () => {
    const job = await runningOnNode(['sh', '-c', 'echo hello-from-n1; sleep 60']);
    expect(inner.clones.has(job.cloneId!)).to.equal(true);
    expect(serverDriver.clones.size).to.equal(0);
    const clones = remote.clones(serverDriver);
    const peeked = await until(
      'step 2',
      async () => {
        const p = await clones.peek!(job.cloneId!, 'stdout', 0, 4096);
        return p.data.length ? p : undefined;
      },
      10_000,
    );
    expect(peeked.data.toString()).to.equal('hello-from-n1\n');
    const entered = await clones.enter!(job.cloneId!, { argv: ['sh', '-c', 'echo entered; echo err >&2; exit 3'], cwd: '/tmp', env: {}, user: 'root' });
    expect(entered).to.deep.include({ exitCode: 3 });
    expect(entered.stdout.toString()).to.equal('entered\n');
    expect(entered.stderr.toString()).to.equal('err\n');

    await server.signal(ADMIN, job.id, 'TERM');
    const done = await until(
      'step 3',
      async () => {
        const j = await server.store.get(job.id);
        return j.state === 'F' ? j : undefined;
      },
      20_000,
    );
    expect(done.exitStatus).to.equal(256 + 15);
    expect(readFileSync(join(deliverRoot, 'hn1', 'tmp', `STDIN.o${job.seq}`), 'utf8')).to.equal('hello-from-n1\n');
    expect(readFileSync(join(deliverRoot, 'hn1', '.stageout', `${job.id}.tar`), 'utf8')).to.contain(`fake archive of ${job.cloneId}`);
    await until('step 4', async () => !serverDriver.snapshots.has(job.snapshotId!) || undefined, 10_000);
    expect(inner.clones.size).to.equal(0);
  });

  it('gcqdel on the server stops a job running on the node', async () => {
    const job = await runningOnNode(['sleep', '60']);
    await server.delete(ADMIN, job.id);
    const done = await until(
      'step 5',
      async () => {
        const j = await server.store.get(job.id);
        return j.state === 'F' ? j : undefined;
      },
      20_000,
    );
    expect(done.comment).to.match(/deleted by gcqdel while running/);
    expect(done.endReason).to.equal('deleted');
  });

  it('gcqrerun on the server stops the run on the node and the job runs again', async () => {
    const job = await runningOnNode(['sleep', '60']);
    await server.rerun(ADMIN, job.id);
    const again = await until(
      'step 6',
      async () => {
        const j = await server.store.get(job.id);
        return j.runCount >= 2 && j.state === 'R' ? j : undefined;
      },
      20_000,
    );
    expect(again.cloneId).to.not.equal(job.cloneId);
    await server.delete(ADMIN, job.id);
    await until('step 7', async () => ((await server.store.get(job.id)).state === 'F' ? true : undefined), 20_000);
  });

  it("the node's control listener refuses a wrong token and another node's token", async () => {
    const base = (await r.client.hget('copper:node:n1', 'controlUrl'))!;
    const other = await tokens.mint('n2');
    for (const [name, token] of [
      ['n1', 'B'.repeat(43)],
      ['n2', other],
    ] as const) {
      const e = await callJson({ base, method: 'POST', path: '/control/v1/jobs/1.srv/cancel', node: name, token, body: { reason: 'deleted' } }).catch(
        (x: unknown) => x,
      );
      expect((e as { code?: string }).code, String(e)).to.equal('EPERM');
    }
  });
});
