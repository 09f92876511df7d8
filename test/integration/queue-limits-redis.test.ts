/**
 * Queue limits through the atomic Redis counts (issue 13 item 11): a queue's own limits and its
 * `per_user` limits are two different entities, and each is held by the Lua step that writes
 * (submission, start, gcqmove), not only by the early look. Real redis-server, the test-double
 * driver (its snapshots are slowed down to widen any race).
 */
import { expect } from 'chai';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseQuotaText, type QuotaConfig } from '../../src/config/quotas.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { QuotaError } from '../../src/errors.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { testSpec } from '../helpers/jobs.js';
import { schedulerOptions } from '../helpers/scheduler.js';
import { until } from '../helpers/gcd-process.js';

const cfgOf = (text: string): QuotaConfig => parseQuotaText(text, 'quotas.yaml');

const QUOTAS = `
queues:
  workq: {}
  total2: {max_queued: 2}
  each1: {per_user: {max_queued: 1}}
  run1each: {per_user: {max_running: 1}}
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
});
