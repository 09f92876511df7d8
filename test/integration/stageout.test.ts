import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import type { CloneHandle } from '../../src/drivers/driver.js';
import type { JobSpec } from '../../src/queue/job.js';
import { ADMIN } from '../../src/scheduler/actor.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import type { StageOutRequest, StageOutResult } from '../../src/stageout/types.js';
import type { TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { testSpec } from '../helpers/jobs.js';
import { startSchedulerFixture, stopSchedulerFixture } from '../helpers/scheduler.js';

/** Records, for each stage-out, whether the clone still existed and the job was not F yet. */
class WatchingDriver extends FakeDriver {
  seen: Array<{ jobId: string; cloneAlive: boolean; paths: string[] }> = [];
  answer: StageOutResult | Error = { placed: 1, bytes: 10, conflicts: [], conflictCount: 0, errors: [] };
  override async stageOut(clone: CloneHandle, req: StageOutRequest): Promise<StageOutResult> {
    this.seen.push({ jobId: req.jobId, cloneAlive: this.clones.has(clone.cloneId), paths: req.paths });
    await super.stageOut(clone, req);
    if (this.answer instanceof Error) throw this.answer;
    return this.answer;
  }
}

/** The shared test spec, running `true` unless told otherwise. */
const spec = (over: Partial<JobSpec> = {}): JobSpec => testSpec({ argv: ['true'], ...over });

describe('stage-out in the job runner (real Redis + BullMQ, test-double driver)', function () {
  let r: TestRedis;
  let driver: WatchingDriver;
  let sched: Scheduler;

  beforeEach(async function () {
    ({ r, driver, sched } = await startSchedulerFixture({ driver: (o) => new WatchingDriver(o) }));
  });
  afterEach(async function () {
    await stopSchedulerFixture({ sched, driver, r });
  });

  it('stages out for every ending (exit, failure, walltime, gcqdel) while the clone lives, before F', async function () {
    const [ok, bad, wall, del] = await sched.submit([
      spec({ stageout: ['/data/extra'] }),
      spec({ argv: ['sh', '-c', 'exit 3'] }),
      spec({ argv: ['sleep', '30.02'], walltimeSec: 1 }),
      spec({ argv: ['sleep', '30.03'] }),
    ]);
    await until('the job to delete runs', () => spawnSync('pgrep', ['-f', '^sleep 30\\.03$']).status === 0, 20_000);
    await sched.delete(ADMIN, del.id);
    for (const j of [ok, bad, wall, del]) await sched.waitFor(j.id);
    const byJob = new Map(driver.seen.map((s) => [s.jobId, s]));
    for (const j of [ok, bad, wall, del]) {
      expect(byJob.get(j.id)?.cloneAlive, j.id).to.equal(true);
    }
    expect(byJob.get(ok.id)?.paths).to.deep.equal(['/tmp', '/data/extra']);
    expect(driver.seen).to.have.length(4);
  });

  it('-W stageout=none stages nothing; conflicts, the cap and failures are in the comment', async function () {
    const [none] = await sched.submit([spec({ stageout: 'none' })]);
    await sched.waitFor(none.id);
    expect(driver.seen).to.have.length(0);

    driver.answer = {
      placed: 2,
      bytes: 10,
      conflicts: ['/tmp/a.txt'],
      conflictCount: 1,
      errors: [],
      excess: { entries: 1, bytes: 5_000_000, keptAt: '/var/lib/copper/undelivered/2.srv/stageout-excess.tar' },
    };
    const [c] = await sched.submit([spec()]);
    const done = await sched.waitFor(c.id);
    expect(done.exitStatus).to.equal(0);
    expect(done.comment)
      .to.include('Job run, exit 0')
      .and.include('/tmp/a.txt')
      .and.include('kept on the host at /var/lib/copper/undelivered/2.srv/stageout-excess.tar');

    driver.answer = new Error('headnode hn1 is not running');
    const [f] = await sched.submit([spec()]);
    expect((await sched.waitFor(f.id)).comment)
      .to.include('stage-out failed')
      .and.include('headnode hn1 is not running');
  });

  it('an afterok dependent runs in a snapshot taken when its parent ended, and old snapshots are released', async function () {
    const [parent] = await sched.submit([spec({ argv: ['sleep', '0.5'] })]);
    const [child] = await sched.submit([spec()], { depend: [{ type: 'afterok', jobIds: [parent.id] }] });
    const done = await sched.waitFor(child.id);
    expect(done.exitStatus).to.equal(0);
    expect(done.snapshotId ?? (await sched.get(ADMIN, child.id)).snapshotId).to.not.equal(child.snapshotId);
    await until('snapshots released', () => driver.snapshots.size === 0, 5000);
  });
});
