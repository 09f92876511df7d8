import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { EXIT } from '../../src/queue/job.js';
import { UsageError } from '../../src/errors.js';
import { ADMIN } from '../../src/scheduler/actor.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import type { TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { testSpec } from '../helpers/jobs.js';
import { schedulerOptions, startSchedulerFixture, stopSchedulerFixture } from '../helpers/scheduler.js';

/** The shared test spec (a job printing a line to each of stdout and stderr). */
const spec = testSpec;

describe('scheduler pipeline (real Redis + BullMQ, test-double driver)', function () {
  let r: TestRedis;
  let driver: FakeDriver;
  let sched: Scheduler;
  let deliverRoot: string;

  beforeEach(async function () {
    ({ r, driver, sched, deliverRoot } = await startSchedulerFixture());
  });

  afterEach(async function () {
    await stopSchedulerFixture({ sched, driver, r });
  });

  it('runs a job and delivers PBS output files, exit status and timestamps', async function () {
    const [job] = await sched.submit([spec()]);
    expect(job.id).to.equal('1.srv');
    const done = await sched.waitFor(job.id);
    expect(done.state).to.equal('F');
    expect(done.exitStatus).to.equal(0);
    expect(done.startedAt).to.be.at.least(done.queuedAt);
    expect(done.endedAt).to.be.at.least(done.startedAt!);
    expect(readFileSync(join(deliverRoot, 'hn1', '/tmp/STDIN.o1'), 'utf8')).to.equal('hello\n');
    expect(readFileSync(join(deliverRoot, 'hn1', '/tmp/STDIN.e1'), 'utf8')).to.equal('oops\n');
    expect(driver.clones.size).to.equal(0);
    expect(driver.snapshots.size).to.equal(0, 'snapshot released with its last job');
  });

  it('gives the job the PBS environment', async function () {
    const [job] = await sched.submit([
      spec({
        argv: ['sh', '-c', 'echo $PBS_JOBID $PBS_JOBNAME $PBS_O_WORKDIR $PBS_QUEUE $PBS_ENVIRONMENT $NCPUS'],
        name: 'envjob',
        resources: { ncpus: 2, memMiB: 0 },
      }),
    ]);
    await sched.waitFor(job.id);
    expect(readFileSync(join(deliverRoot, 'hn1', '/tmp/envjob.o1'), 'utf8')).to.equal('1.srv envjob /tmp workq PBS_BATCH 2\n');
  });

  it('joins stderr into stdout with -j oe', async function () {
    const [job] = await sched.submit([spec({ join: 'oe', name: 'j' })]);
    await sched.waitFor(job.id);
    const out = readFileSync(join(deliverRoot, 'hn1', '/tmp/j.o1'), 'utf8');
    expect(out).to.contain('hello').and.to.contain('oops');
    expect(existsSync(join(deliverRoot, 'hn1', '/tmp/j.e1'))).to.equal(false);
  });

  it('records a non-zero exit and a signal as PBS does (256+N)', async function () {
    const [a, b] = await sched.submit([spec({ argv: ['sh', '-c', 'exit 3'] }), spec({ argv: ['sh', '-c', 'kill -KILL $$'] })]);
    expect((await sched.waitFor(a.id)).exitStatus).to.equal(3);
    expect((await sched.waitFor(b.id)).exitStatus).to.equal(256 + 9);
    expect(a.snapshotId).to.equal(b.snapshotId, 'one submission, one snapshot');
  });

  it('kills a job over its walltime: SIGTERM, kill delay, SIGKILL; Exit_status -29', async function () {
    const [job] = await sched.submit([spec({ argv: ['sh', '-c', "trap '' TERM; sleep 30"], walltimeSec: 1 })]);
    const t0 = Date.now();
    const done = await sched.waitFor(job.id);
    expect(done.exitStatus).to.equal(EXIT.WALLTIME);
    expect(done.comment).to.match(/walltime/);
    expect(Date.now() - t0).to.be.below(10_000);
    expect(driver.clones.size).to.equal(0);
  });

  it('gcqdel removes a queued job and stops a running one, destroying its clone', async function () {
    const [run] = await sched.submit([spec({ argv: ['sleep', '30.01'] })]);
    await until('job running', async () => (await sched.get(ADMIN, run.id)).state === 'R');
    await until('its command running', () => spawnSync('pgrep', ['-f', '^sleep 30\\.01$']).status === 0);
    expect((await sched.get(ADMIN, run.id)).state).to.equal('R');
    await sched.delete(ADMIN, run.id);
    const done = await sched.waitFor(run.id);
    expect(done.exitStatus).to.equal(256 + 15);
    expect(done.comment).to.match(/deleted/);
    expect(driver.clones.size).to.equal(0);

    const [held] = await sched.submit([spec()], { hold: true });
    await sched.delete(ADMIN, held.id);
    const gone = await sched.get(ADMIN, held.id);
    expect(gone.state).to.equal('F');
    expect(gone.exitStatus).to.equal(undefined);
  });

  it("refuses an unknown job id and another user's job", async function () {
    let err: unknown;
    try {
      await sched.get(ADMIN, '999.srv');
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/Unknown Job Id 999.srv/);
    const [job] = await sched.submit([spec()]);
    const bob = { kind: 'guest' as const, identity: { vmId: 'hn2', kind: 'headnode' as const, headnode: 'hn2', owner: 'bob', group: 'users' } };
    err = undefined;
    try {
      await sched.delete(bob, job.id);
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/Unknown Job Id/);
    expect((await sched.list(bob)).length).to.equal(0);
  });

  it('fails a submission for a missing headnode and leaves nothing queued', async function () {
    let err: unknown;
    try {
      await sched.submit([spec({ headnode: 'nope' })]);
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/unknown headnode nope/);
    expect(await sched.list(ADMIN, { includeFinished: true })).to.have.length(0);
  });

  it('keeps jobs queued with a Resources reason when capacity is short', async function () {
    const jobs = await sched.submit([
      spec({ argv: ['sleep', '1'], resources: { ncpus: 3, memMiB: 0 } }),
      spec({ argv: ['true'], resources: { ncpus: 3, memMiB: 0 } }),
    ]);
    const saw = await until('a Resources reason', async () => {
      const b = await sched.get(ADMIN, jobs[1].id);
      return b.state === 'Q' && b.comment?.startsWith('Resources') ? b.comment : undefined;
    });
    expect(saw).to.match(/Resources: waiting for 3 cpus/);
    expect((await sched.waitFor(jobs[1].id)).exitStatus).to.equal(0);
  });

  it('refuses only what no host can hold (one line: resource, request, host); records asked and assigned', async function () {
    // The test double's snapshots say what QEMU's do: 512 MiB, 1 vCPU, hot-pluggable up to 8 vCPUs and 16 GiB.
    const before = await sched.list(ADMIN, { includeFinished: true });
    const cpuErr = await sched.submit([spec({ resources: { ncpus: 5, memMiB: 0 } })]).catch((e: unknown) => e);
    expect(cpuErr).to.be.instanceOf(UsageError);
    expect((cpuErr as Error).message).to.equal('ncpus=5 exceeds the largest host (4)');
    const memErr = await sched.submit([spec({ resources: { ncpus: 1, memMiB: 8192 } })]).catch((e: unknown) => e);
    expect((memErr as Error).message).to.equal('mem=8gb exceeds the largest host (4gb)');
    expect(await sched.list(ADMIN, { includeFinished: true })).to.have.length(before.length);
    expect(driver.snapshots.size).to.equal(0, 'a refused job leaves no snapshot');

    // Above the headnode's 512 MiB but within the host: accepted, the rest hot-plugged (up to its maxmem).
    const [big] = await sched.submit([spec({ argv: ['true'], resources: { ncpus: 2, memMiB: 2048 } })]);
    expect(big.spec.resources).to.deep.equal({ ncpus: 2, memMiB: 2048 });
    expect(big.spec.assigned).to.deep.equal({ ncpus: 2, memMiB: 2048 });
    expect((await sched.waitFor(big.id)).exitStatus).to.equal(0);
  });

  it('runs higher PBS priority first', async function () {
    await sched.close();
    // One job at a time, with the Scheduler's own lock duration.
    const oneAtATime = { capacity: { ncpus: 1, memMiB: 4096 }, concurrency: 1, lockDurationMs: undefined };
    sched = new Scheduler(schedulerOptions(r, driver, { ...oneAtATime, dispatch: false }));
    const order = join(r.dir, 'order');
    const [lo] = await sched.submit([spec({ argv: ['sh', '-c', `echo lo >> ${order}`], priority: -100 })]);
    const [hi] = await sched.submit([spec({ argv: ['sh', '-c', `echo hi >> ${order}`], priority: 500 })]);
    await sched.close();
    sched = new Scheduler(schedulerOptions(r, driver, { ...oneAtATime }));
    await sched.start();
    await sched.waitFor(lo.id);
    await sched.waitFor(hi.id);
    expect(readFileSync(order, 'utf8')).to.equal('hi\nlo\n');
  });
});
