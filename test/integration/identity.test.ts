/**
 * Issue 13 item 8 (a): a headnode name reused by another user. alice's headnode `hn` has a
 * queued job, a running job and a recurring job; it is destroyed and bob creates `hn`. None
 * of alice's output may land in bob's `hn` and her recurring job must not fire there.
 * Real redis-server and BullMQ; the test-double driver delivers into <root>/<headnode name>/,
 * so bob's `hn` is the same folder alice's was: exactly the hole being attacked.
 */
import { expect } from 'chai';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { ADMIN } from '../../src/scheduler/actor.js';
import type { Scheduler } from '../../src/scheduler/scheduler.js';
import type { TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { testSpec } from '../helpers/jobs.js';
import { startSchedulerFixture, stopSchedulerFixture } from '../helpers/scheduler.js';

describe('a reused headnode name (issue 13 item 8a)', function () {
  let r: TestRedis;
  let driver: FakeDriver;
  let sched: Scheduler;
  let deliverRoot: string;
  const incarnations = new Map<string, string>();
  const headnodes = new Set<string>();

  beforeEach(async function () {
    incarnations.set('hn', 'alice-incarnation');
    headnodes.add('hn');
    ({ r, driver, sched, deliverRoot } = await startSchedulerFixture({
      driver: (o) => new FakeDriver({ ...o, headnodes, incarnations }),
    }));
  });

  afterEach(async function () {
    await stopSchedulerFixture({ sched, driver, r });
  });

  /** alice's hn destroyed, bob's hn created under the same name. */
  function recreateAsBob(): void {
    headnodes.delete('hn');
    incarnations.delete('hn');
    headnodes.add('hn');
    incarnations.set('hn', 'bob-incarnation');
  }

  const alice = (over: Parameters<typeof testSpec>[0] = {}): ReturnType<typeof testSpec> =>
    testSpec({ headnode: 'hn', submitHost: 'hn', user: 'alice', ...over });

  it("keeps alice's queued and running jobs' output off bob's headnode, with the reason", async function () {
    const [queued] = await sched.submit([alice({ name: 'queued', argv: ['sh', '-c', 'echo secret-q'] })], { hold: true });
    const [running] = await sched.submit([alice({ name: 'running', argv: ['sh', '-c', 'sleep 1; echo secret-r'] })]);
    expect(queued.spec.headnodeIncarnation).to.equal('alice-incarnation', 'the job carries the incarnation it was submitted in');
    await until('the job runs', async () => (await sched.get(ADMIN, running.id)).state === 'R');
    recreateAsBob();
    await sched.release(ADMIN, queued.id);
    for (const id of [queued.id, running.id]) {
      const done = await sched.waitFor(id);
      expect(done.state).to.equal('F');
      expect(done.comment).to.match(/headnode 'hn' was destroyed and created again since this job was submitted/);
      const kept = join(r.dir, 'undelivered', id);
      expect(readdirSync(kept).length, 'output kept on the host').to.be.greaterThan(0);
    }
    expect(readFileSync(join(r.dir, 'undelivered', running.id, 'running.o2'), 'utf8')).to.equal('secret-r\n');
    // Nothing of alice's in what is now bob's hn.
    expect(existsSync(join(deliverRoot, 'hn')), "no file written into bob's hn").to.equal(false);
    expect(driver.snapshots.size).to.equal(0, 'snapshots released');
  });

  it('delivers as before when the headnode is the same one', async function () {
    const [job] = await sched.submit([alice({ name: 'same', argv: ['sh', '-c', 'echo mine'] })]);
    await sched.waitFor(job.id);
    expect(readFileSync(join(deliverRoot, 'hn', '/tmp/same.o1'), 'utf8')).to.equal('mine\n');
  });

  it("does not fire alice's recurring job as bob: it is paused with the reason", async function () {
    // Start just after a second boundary, so that no legitimate firing falls before the swap.
    while (Date.now() % 1000 > 100) await sleep(20);
    const c = await sched.recurring.create('* * * * * *', alice({ name: 'tick', argv: ['echo', 'tick'] }));
    expect(c.spec.headnodeIncarnation).to.equal('alice-incarnation', 'pinned at creation');
    recreateAsBob();
    const paused = await until('the firing is refused', async () => {
      const [d] = await sched.recurring.list(ADMIN);
      return d?.paused ? d : undefined;
    });
    expect(paused.lastError).to.match(/^not fired, paused: headnode 'hn' was destroyed and created again/);
    await sleep(2200);
    const jobs = await sched.list(ADMIN, { includeFinished: true });
    expect(jobs, 'no job submitted by any firing').to.deep.equal([]);
    expect(driver.snapshots.size).to.equal(0, "the snapshot taken of bob's hn for the refused firing is released");
  });
});
