import { expect } from 'chai';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { EXIT, type JobRecord, type JobSpec } from '../../src/queue/job.js';
import { JobStore } from '../../src/queue/job-store.js';
import { keysFor } from '../../src/queue/keys.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { testRecord, testSpec } from '../helpers/jobs.js';
import { schedulerOptions } from '../helpers/scheduler.js';

const keys = keysFor('copper');

describe('gcd start after a crash: jobs left in the middle end exactly once', function () {
  let r: TestRedis;
  let driver: FakeDriver;
  let sched: Scheduler | undefined;

  beforeEach(async function () {
    r = await startTestRedis();
    mkdirSync(join(r.dir, 'headnodes'));
    driver = new FakeDriver({ deliverRoot: join(r.dir, 'headnodes'), headnodes: new Set(['hn1']), snapshotDir: join(r.dir, 'snaps') });
  });
  afterEach(async function () {
    await sched?.close();
    await driver.close();
    await r.stop();
  });

  it('R -r y runs again, R -r n ends -3, E ends with its status (not rerun), an unsettled F is settled', async function () {
    const store = new JobStore(r.client, keys, 'srv');
    const rec = async (seq: number, state: JobRecord['state'], spec: Partial<JobSpec>, over: Partial<JobRecord> = {}): Promise<JobRecord> => {
      const snap = await driver.snapshot('hn1');
      const x = testRecord(seq, state, { snapshotId: snap.id, spec: testSpec(spec), runCount: state === 'R' || state === 'E' ? 1 : 0, ...over });
      await store.create([x]);
      return x;
    };
    const rerun = await rec(1, 'R', { argv: ['echo', 'again'] });
    const norerun = await rec(2, 'R', { rerunnable: false });
    const exiting = await rec(3, 'E', { argv: ['sh', '-c', 'echo should-not-run-twice'] }, { exitStatus: 7, comment: 'Job run, exit 7' });
    // gcd died while delivering its output: the command's stdout waits in the spool.
    mkdirSync(join(r.dir, 'spool', exiting.id), { recursive: true });
    writeFileSync(join(r.dir, 'spool', exiting.id, 'stdout'), 'ran once\n');
    // F written, then gcd died before its snapshot, dependents and history clock were settled.
    const parent = await rec(4, 'F', {}, { exitStatus: 0, settling: true, endedAt: Date.now() });
    const child = await rec(5, 'H', { argv: ['echo', 'child'] }, { holds: 's', depend: [{ type: 'afterok', jobIds: [parent.id] }] });
    await store.addDependents([parent.id], child.id);

    sched = new Scheduler(schedulerOptions(r, driver, { historyTtlSec: 600 }));
    const heard: string[] = [];
    sched.store.events.subscribe((t) => void heard.push(`${t.jobId} ${t.from}>${t.to}`));
    await sched.start();

    await until('all ended', async () => {
      const all = await Promise.all([rerun, norerun, exiting, child].map((j) => store.get(j.id)));
      return all.every((j) => j.state === 'F');
    });
    const get = (j: JobRecord): Promise<JobRecord> => store.get(j.id);
    const a = await get(rerun);
    expect([a.exitStatus, a.runCount]).to.deep.equal([0, 2]);
    const b = await get(norerun);
    expect([b.exitStatus, b.runCount]).to.deep.equal([EXIT.LOST, 1]);
    expect(b.comment).to.match(/not rerunnable/);
    const c = await get(exiting);
    expect([c.exitStatus, c.runCount]).to.deep.equal([7, 1]);
    expect(c.comment).to.match(/gcd stopped while its output was delivered/);
    expect(heard.filter((h) => h.startsWith(`${exiting.id} `))).to.deep.equal([`${exiting.id} E>F`]);
    expect(readFileSync(join(r.dir, 'headnodes', 'hn1', 'tmp', `STDIN.o${exiting.seq}`), 'utf8')).to.equal(
      'ran once\n',
      'spooled output delivered after the crash',
    );
    expect(existsSync(join(r.dir, 'spool', exiting.id))).to.equal(false);
    const p = await get(parent);
    expect(p.settling).to.equal(undefined);
    expect(await r.client.ttl(keys.job(parent.id))).to.be.within(1, 600);
    expect(await r.client.exists(keys.dependents(parent.id))).to.equal(0);
    expect((await get(child)).exitStatus).to.equal(0, 'the dependent was released and ran');
    await until('snapshots released', () => driver.snapshots.size === 0 || undefined);
    expect((await store.snapshotRefs()).size).to.equal(0);
  });
});
