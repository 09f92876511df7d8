import { expect } from 'chai';
import type { CloneHandle, CloneOptions, SnapshotInfo } from '../../src/drivers/driver.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { UsageError } from '../../src/errors.js';
import type { JobSpec } from '../../src/queue/job.js';
import { ADMIN } from '../../src/scheduler/actor.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import type { TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { testSpec } from '../helpers/jobs.js';
import { startSchedulerFixture, stopSchedulerFixture } from '../helpers/scheduler.js';

/** The test double, remembering what each clone was asked to be. */
class RecordingDriver extends FakeDriver {
  readonly asked: CloneOptions[] = [];
  /** The snapshots' maxmem, as a headnode's --max-mem would set it. */
  maxMemMiB = 16_384;
  override async snapshot(headnode: string): Promise<SnapshotInfo> {
    return { ...(await super.snapshot(headnode)), maxMemMiB: this.maxMemMiB };
  }
  override async clone(o: CloneOptions): Promise<CloneHandle> {
    this.asked.push(o);
    return super.clone(o);
  }
}

/** The shared test spec, running `true` unless told otherwise. */
const spec = (over: Partial<JobSpec> = {}): JobSpec => testSpec({ argv: ['true'], ...over });

/**
 * -l mem above the headnode's RAM (the double's snapshots say what QEMU's do: 512 MiB,
 * growable to 16 GiB): accepted up to the host's capacity, reserved against it, passed to the clone.
 */
describe('jobs asking more memory than their headnode (real Redis, test-double driver)', function () {
  let r: TestRedis;
  let driver: RecordingDriver;
  let sched: Scheduler;

  beforeEach(async function () {
    ({ r, driver, sched } = await startSchedulerFixture({
      driver: (o) => new RecordingDriver(o),
      scheduler: { capacity: { ncpus: 8, memMiB: 6144 } },
    }));
  });

  afterEach(async function () {
    await stopSchedulerFixture({ sched, driver, r });
  });

  it("gives the clone what the job asked above the headnode's RAM, and the headnode's RAM below it", async function () {
    const [big] = await sched.submit([spec({ resources: { ncpus: 3, memMiB: 2048 } })]);
    const [small] = await sched.submit([spec({ resources: { ncpus: 1, memMiB: 100 } })]);
    expect(big.spec.resources).to.deep.equal({ ncpus: 3, memMiB: 2048 });
    expect(big.spec.assigned).to.deep.equal({ ncpus: 3, memMiB: 2048 });
    expect(small.spec.resources).to.deep.equal({ ncpus: 1, memMiB: 512 });
    expect(small.spec.assigned).to.deep.equal({ ncpus: 1, memMiB: 512 });
    for (const j of [big, small]) expect((await sched.waitFor(j.id)).exitStatus).to.equal(0);
    const byJob = new Map(driver.asked.map((o) => [o.hostname, o]));
    expect(byJob.get('hn1-1')).to.include({ ncpus: 3, memMiB: 2048 });
    expect(byJob.get('hn1-2')).to.include({ ncpus: 1, memMiB: 512 });
  });

  it('gives a clone no more than its snapshot can grow to, and says so in assigned', async function () {
    driver.maxMemMiB = 1024; // e.g. gc headnode create --max-mem 1024
    const [j] = await sched.submit([spec({ resources: { ncpus: 1, memMiB: 4096 } })]);
    expect(j.spec.resources.memMiB).to.equal(4096, 'reserved as asked');
    expect(j.spec.assigned?.memMiB).to.equal(1024);
    expect((await sched.waitFor(j.id)).exitStatus).to.equal(0);
    expect(driver.asked.at(-1)).to.include({ memMiB: 1024 });
  });

  it("refuses memory above the host's capacity in one line with the host's figure, and queues nothing", async function () {
    const before = await sched.list(ADMIN, { includeFinished: true });
    const err = await sched.submit([spec({ resources: { ncpus: 1, memMiB: 8192 } })]).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.equal('mem=8gb exceeds the largest host (6gb)');
    expect(await sched.list(ADMIN, { includeFinished: true })).to.have.length(before.length);
    expect(driver.snapshots.size).to.equal(0, 'the snapshot of a refused job is released');
  });

  it('reserves the asked memory against the host: a job that fits the host but not now waits with a reason', async function () {
    const [a] = await sched.submit([spec({ argv: ['sleep', '2'], resources: { ncpus: 1, memMiB: 4096 } })]);
    await until('first job running', async () => (await sched.get(ADMIN, a.id)).state === 'R');
    const [b] = await sched.submit([spec({ resources: { ncpus: 1, memMiB: 4096 } })]);
    const waiting = await until('second job waiting', async () => {
      const j = await sched.get(ADMIN, b.id);
      return j.comment?.startsWith('Resources:') ? j : undefined;
    });
    expect(waiting.state).to.equal('Q');
    expect(waiting.comment).to.equal('Resources: waiting for 4096 MiB (4096/6144 in use)');
    expect((await sched.waitFor(b.id)).exitStatus).to.equal(0);
  });
});
