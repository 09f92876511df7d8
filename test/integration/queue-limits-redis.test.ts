/**
 * Queue limits through the atomic Redis counts (issue 13 item 11): a queue's own limits and its
 * `per_user` limits are two different entities, and each is held by the Lua step that writes
 * (submission, start, gcqmove), not only by the early look. Real redis-server, the test-double
 * driver (its snapshots are slowed down to widen any race).
 */
import { expect } from 'chai';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseQuotaText, type QuotaConfig } from '../../src/config/quotas.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { QuotaError } from '../../src/errors.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { testSpec } from '../helpers/jobs.js';
import { schedulerOptions } from '../helpers/scheduler.js';
import { GcdProcess, until } from '../helpers/gcd-process.js';
import { ADMIN } from '../../src/scheduler/actor.js';

/** Every usage count hash, as field maps: what the counts say now. */
async function counts(r: TestRedis): Promise<Record<string, Record<string, string>>> {
  const out: Record<string, Record<string, string>> = {};
  for (const k of (await r.client.keys('copper:usage:*')).sort()) {
    if (/:(fair|pend):/.test(k)) continue;
    out[k] = await r.client.hgetall(k);
  }
  return out;
}

const cfgOf = (text: string): QuotaConfig => parseQuotaText(text, 'quotas.yaml');

const QUOTAS = `
queues:
  workq: {}
  total2: {max_queued: 2}
  each1: {per_user: {max_queued: 1}}
  run1each: {per_user: {max_running: 1}}
  big3: {max_queued: 3}
  other: {}
default_queue: workq
`;

describe('queue limits held by the atomic Redis steps (issue 13 item 11)', function () {
  this.timeout(60_000);
  let r: TestRedis;
  let driver: FakeDriver;
  let s: Scheduler;

  beforeEach(async function () {
    r = await startTestRedis();
    const deliverRoot = join(r.dir, 'headnodes');
    mkdirSync(deliverRoot);
    driver = new FakeDriver({ deliverRoot, headnodes: new Set(['hn1']), snapshotDir: join(r.dir, 'snaps'), snapshotDelayMs: 150 });
    const cfg = cfgOf(QUOTAS);
    s = new Scheduler(schedulerOptions(r, driver, { quotas: () => cfg, retryDelayMs: 100, capacity: { ncpus: 8, memMiB: 8192 } }));
  });
  afterEach(async function () {
    await s.close();
    await driver.close();
    await r.stop();
  });

  const both = (queue: string, n: number, argv = ['true']): Array<Promise<unknown>> =>
    ['alice', 'bob'].flatMap((user) => Array.from({ length: n }, () => s.submit([testSpec({ argv, user, queue })], { hold: true })));

  it("a queue's max_queued counts every user: 6 parallel submissions of two users into max_queued=2 accept exactly 2", async function () {
    await s.start();
    const res = await Promise.allSettled(both('total2', 3));
    expect(res.filter((x) => x.status === 'fulfilled')).to.have.length(2);
    for (const x of res) {
      if (x.status === 'rejected') expect(String(x.reason)).to.match(/would exceed max_queued=2 for queue total2 \(has 2 queued or running, submitting 1\)/);
    }
    expect((await s.usage.read('alice', 'users', 'total2')).queues.get('total2')?.queued).to.equal(2);
  });

  it('per_user max_queued counts each user alone: 6 parallel submissions of two users into per_user max_queued=1 accept one each', async function () {
    await s.start();
    const res = await Promise.allSettled(both('each1', 3));
    expect(res.filter((x) => x.status === 'fulfilled')).to.have.length(2);
    for (const x of res) {
      if (x.status === 'rejected') {
        expect(x.reason).to.be.instanceOf(QuotaError);
        expect(String(x.reason)).to.match(/would exceed max_queued=1 for user (alice|bob) in queue each1 \(has 1 queued or running, submitting 1\)/);
      }
    }
    const owners = (await s.store.list()).map((j) => j.spec.user).sort();
    expect(owners).to.deep.equal(['alice', 'bob']);
  });

  it('per_user max_running=1 lets one job of each user run at once, not one in all', async function () {
    await s.start();
    const [a] = await s.submit([testSpec({ argv: ['sleep', '5'], user: 'alice', queue: 'run1each' })]);
    const [b] = await s.submit([testSpec({ argv: ['sleep', '5'], user: 'bob', queue: 'run1each' })]);
    const [a2] = await s.submit([testSpec({ argv: ['sleep', '5'], user: 'alice', queue: 'run1each' })]);
    await until('both users running', async () => (await s.store.get(a.id)).state === 'R' && (await s.store.get(b.id)).state === 'R', 4000);
    const waiting = await s.store.get(a2.id);
    expect(waiting.state).to.equal('Q');
    await until(
      "alice's second job's reason",
      async () => /^QueueUserMaxRun: alice in queue run1each has 1 of max_running=1/.test((await s.store.get(a2.id)).comment ?? ''),
      4000,
    );
  });

  it('8 parallel gcqmove of different jobs into max_queued=3: exactly 3 move, the rest are refused, the counts stay right', async function () {
    await s.start();
    const jobs = [];
    for (let i = 0; i < 8; i++) jobs.push(...(await s.submit([testSpec({ argv: ['true'] })], { hold: true })));
    const res = await Promise.allSettled(jobs.map((j) => s.move(ADMIN, j.id, 'big3')));
    expect(res.filter((x) => x.status === 'fulfilled')).to.have.length(3);
    for (const x of res) {
      if (x.status === 'rejected') {
        expect(x.reason).to.be.instanceOf(QuotaError);
        expect(String((x.reason as Error).message)).to.equal('would exceed max_queued=3 for queue big3 (has 3 queued or running, submitting 1)');
      }
    }
    const queues = (await s.store.list()).map((j) => j.spec.queue);
    expect(queues.filter((q) => q === 'big3')).to.have.length(3);
    expect(queues.filter((q) => q === 'workq')).to.have.length(5);
    const now = await counts(r);
    expect(now['copper:usage:q:big3']?.queued).to.equal('3');
    expect(now['copper:usage:q:workq']?.queued).to.equal('5');
    expect(now['copper:usage:u:alice']?.queued).to.equal('8');
    // The counts are what the records say: a rebuild from the records changes nothing.
    await s.store.rebuildUsage();
    expect(await counts(r)).to.deep.equal(now);
  });

  it('an array moves whole or not at all: 4 tasks into room for 3 move none', async function () {
    await s.start();
    const [arr] = await s.submit([testSpec({ argv: ['true'] })], { hold: true, array: { indices: [1, 2, 3, 4] } });
    const err = await s.move(ADMIN, arr.id, 'big3').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String(err)).to.match(/would exceed max_queued=3 for queue big3 \(has 0 queued or running, submitting 4\)/);
    expect((await s.store.list()).every((j) => j.spec.queue === 'workq')).to.equal(true);
    const [small] = await s.submit([testSpec({ argv: ['true'] })], { hold: true, array: { indices: [1, 2, 3] } });
    expect(await s.move(ADMIN, small.id, 'big3')).to.equal('big3');
    const moved = (await s.store.list()).filter((j) => j.spec.queue === 'big3');
    expect(moved.map((j) => j.id).sort()).to.have.length(4, "the array's record and its 3 tasks");
    expect((await counts(r))['copper:usage:q:big3']?.queued).to.equal('3');
  });

  it('gcqalter -p racing gcqmove on the same jobs: both changes land, counts follow the records', async function () {
    await s.start();
    const jobs = [];
    for (let i = 0; i < 10; i++) jobs.push(...(await s.submit([testSpec({ argv: ['true'] })], { hold: true })));
    await Promise.all(jobs.flatMap((j) => [s.move(ADMIN, j.id, 'other'), s.alter(ADMIN, j.id, { priority: 7 })]));
    for (const j of await s.store.list()) {
      expect(j.spec.queue, j.id).to.equal('other');
      expect(j.spec.priority, j.id).to.equal(7);
    }
    const now = await counts(r);
    expect(now['copper:usage:q:other']?.queued).to.equal('10');
    expect(now['copper:usage:q:workq']).to.equal(undefined);
    await s.store.rebuildUsage();
    expect(await counts(r)).to.deep.equal(now);
  });
});

describe('parallel gcqmove processes through gcd (test-double driver, real redis-server)', function () {
  this.timeout(120_000);
  let g: GcdProcess;
  before(async function () {
    g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_SERVER_NAME: 'srv' });
    mkdirSync(join(g.stateDir, 'config'), { recursive: true });
    writeFileSync(join(g.stateDir, 'config', 'quotas.yaml'), QUOTAS);
    await g.start();
  });
  after(async function () {
    await g?.cleanup();
  });

  it('8 gcqmove at once into max_queued=3: 3 exit 0, 5 refused in one line with a non-zero exit', async function () {
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = g.tool('gcqsub', ['--headnode', 'hn1', '-h', '--', 'true']);
      expect(r.status, r.stderr).to.equal(0);
      ids.push(r.stdout.trim());
    }
    const runs = await Promise.all(ids.map((id) => g.toolAsync('gcqmove', ['big3', id])));
    expect(runs.filter((r) => r.status === 0)).to.have.length(3);
    const refused = runs.filter((r) => r.status !== 0);
    expect(refused).to.have.length(5);
    for (const r of refused) {
      expect(r.status).to.equal(38);
      expect(r.stderr).to.equal('gcqmove: would exceed max_queued=3 for queue big3 (has 3 queued or running, submitting 1)\n');
    }
    const q = g.tool('gcqstat', ['-Q', 'big3', 'workq']);
    expect(q.status, q.stderr).to.equal(0);
    const row = (name: string): string[] => (q.stdout.split('\n').find((l) => l.startsWith(name + ' ')) ?? '').trim().split(/\s+/);
    // Queue  Max  Tot  Ena  Str  Que  Run  Hld ...: Tot counts the queue's jobs.
    expect(row('big3')[2], q.stdout).to.equal('3');
    expect(row('workq')[2], q.stdout).to.equal('5');
  });
});
