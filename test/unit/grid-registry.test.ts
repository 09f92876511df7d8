import { expect } from 'chai';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { GridView } from '../../src/grid/grid-view.js';
import { Placement } from '../../src/grid/placement.js';
import { NodeRegistry, largestHost, type NodeInfo } from '../../src/grid/registry.js';
import { JobStore } from '../../src/queue/job-store.js';
import { keysFor } from '../../src/queue/keys.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { testRecord, testSpec } from '../helpers/jobs.js';
import { schedulerOptions } from '../helpers/scheduler.js';

const keys = keysFor('copper');
const info = (name: string, ncpus = 4, memMiB = 4096): NodeInfo => ({ name, role: 'node', ncpus, memMiB, tmpfsMiB: 1024, accel: 'tcg', version: 't' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('grid registry, run guard and placement (real redis-server)', function () {
  let r: TestRedis;
  beforeEach(async function () {
    r = await startTestRedis();
  });
  afterEach(async function () {
    await r.stop();
  });

  it('a lapsed host is marked down once; its beat then says down; re-registering keeps the admin state', async function () {
    const reg = new NodeRegistry(r.client, keys, 400);
    await reg.register(info('n1'));
    await reg.setAdminState('n1', 'offline', 'maint');
    expect(await reg.markDownIfLapsed('n1')).to.equal(false); // alive
    await sleep(500);
    const marks = await Promise.all([reg.markDownIfLapsed('n1'), reg.markDownIfLapsed('n1'), reg.markDownIfLapsed('n1')]);
    expect(marks.filter(Boolean)).to.have.length(1);
    expect((await reg.get('n1'))?.state).to.equal('down');
    expect(await reg.beat('n1', { usedNcpus: 0, usedMemMiB: 0, jobs: [] })).to.equal('down');
    expect(await reg.register(info('n1'))).to.equal('offline');
    expect(await reg.get('n1')).to.include({ state: 'offline', comment: 'maint', alive: true });
  });

  it('a draining host turns offline on the first beat with no job', async function () {
    const reg = new NodeRegistry(r.client, keys, 5000);
    await reg.register(info('n1'));
    await reg.setAdminState('n1', 'draining', undefined);
    expect(await reg.beat('n1', { usedNcpus: 1, usedMemMiB: 512, jobs: ['1.srv'] })).to.equal('draining');
    expect(await reg.beat('n1', { usedNcpus: 0, usedMemMiB: 0, jobs: [] })).to.equal('offline');
    expect((await reg.get('n1'))?.adminState).to.equal('offline');
  });

  it("a beat records the host's cached snapshots and its control URL stays from registration", async function () {
    const reg = new NodeRegistry(r.client, keys, 5000);
    await reg.register({ ...info('n1'), controlUrl: 'http://10.0.0.2:9400' });
    await reg.beat('n1', { usedNcpus: 1, usedMemMiB: 512, jobs: ['1.srv'], cachedSnapshots: ['hn.a', 'hn.b'] });
    let rec = (await reg.list()).find((n) => n.name === 'n1');
    expect([rec?.cachedSnapshots, rec?.controlUrl]).to.deep.equal([['hn.a', 'hn.b'], 'http://10.0.0.2:9400']);
    // The last holder released them: the next beat says so, and placement no longer prefers this host.
    await reg.beat('n1', { usedNcpus: 0, usedMemMiB: 0, jobs: [] });
    rec = (await reg.list()).find((n) => n.name === 'n1');
    expect(rec?.cachedSnapshots).to.deep.equal([]);
  });

  it('largest host: per resource, over live hosts only', async function () {
    const reg = new NodeRegistry(r.client, keys, 300);
    await reg.register(info('big', 2, 8192));
    await reg.register(info('wide', 16, 1024));
    expect(largestHost(await reg.list())).to.deep.equal({ ncpus: 16, memMiB: 8192 });
    await reg.leave('wide');
    expect(largestHost(await reg.list())).to.deep.equal({ ncpus: 2, memMiB: 8192 });
    await reg.leave('big');
    expect(largestHost(await reg.list())).to.equal(undefined);
  });

  it("a run's host guard: once the record names no host (requeued), the old host's exit is refused", async function () {
    const store = new JobStore(r.client, keys, 'srv');
    await store.create([testRecord(1, 'R', { spec: testSpec(), runCount: 1, execHost: 'n1' })]);
    const lost = await store.transitionOnHost('1.srv', 'n1', 'requeue', { execHost: undefined });
    expect(lost.ok).to.equal(true);
    expect((await store.transition('1.srv', 'run', { execHost: 'n2' })).ok).to.equal(true);
    const stale = await store.transitionOnHost('1.srv', 'n1', 'exit', { exitStatus: 0 });
    expect(stale.ok).to.equal(false);
    expect((await store.get('1.srv')).state).to.equal('R');
    expect((await store.transitionOnHost('1.srv', 'n2', 'exit', { exitStatus: 0 })).ok).to.equal(true);
  });

  it("a host's restart recovers only its own runs", async function () {
    const store = new JobStore(r.client, keys, 'srv');
    mkdirSync(join(r.dir, 'hn'));
    const driver = new FakeDriver({ deliverRoot: join(r.dir, 'hn'), headnodes: new Set(['hn1']) });
    await store.create([
      testRecord(1, 'R', { spec: testSpec(), runCount: 1, execHost: 'n1' }),
      testRecord(2, 'R', { spec: testSpec(), runCount: 1, execHost: 'n2' }),
    ]);
    const sched = new Scheduler(
      schedulerOptions(r, driver, { dispatch: false, host: { name: 'n2', isServer: false, gateDelayMs: 200, gate: async () => undefined } }),
    );
    await sched.start();
    await sched.close();
    expect((await store.get('1.srv')).state).to.equal('R');
    const mine = await store.get('2.srv');
    expect(mine.state).to.equal('Q');
    expect(mine.execHost).to.equal(undefined);
    await driver.close();
  });

  it('placement: defers to an up host caching the snapshot with room, for a bounded time', async function () {
    const reg = new NodeRegistry(r.client, keys, 5000);
    await reg.register(info('n1', 2, 2048));
    await reg.register(info('n2', 2, 2048));
    await r.client.hset(keys.node('n2'), 'cachedSnapshots', 'snapA');
    const view = new GridView(reg);
    await view.refresh();
    const p = new Placement({ redis: r.client, keys, view, boundMs: 600 });
    const job = testRecord(7, 'Q', { spec: testSpec({ resources: { ncpus: 1, memMiB: 512 } }), snapshotId: 'snapA' });
    expect(await p.shouldDefer(job, 'n1')).to.equal('Placement: node n2 already caches snapshot snapA');
    expect(await p.shouldDefer(job, 'n2')).to.equal(undefined);
    expect(await p.shouldDefer({ ...job, snapshotId: 'other' }, 'n1')).to.equal(undefined);
    const big = testRecord(8, 'Q', { spec: testSpec({ resources: { ncpus: 3, memMiB: 512 } }), snapshotId: 'snapA' });
    expect(await p.shouldDefer(big, 'n1')).to.equal(undefined); // n2 has no room for it
    await sleep(700);
    expect(await p.shouldDefer(job, 'n1')).to.equal(undefined); // bounded: no starving
  });
});
