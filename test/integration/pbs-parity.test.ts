import { expect } from 'chai';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseQuotaText, type QuotaConfig } from '../../src/config/quotas.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import type { JobSpec } from '../../src/queue/job.js';
import { ADMIN } from '../../src/scheduler/actor.js';
import { Scheduler, type SchedulerOptions } from '../../src/scheduler/scheduler.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { testSpec } from '../helpers/jobs.js';
import { schedulerOptions, stopSchedulerFixture } from '../helpers/scheduler.js';

/** The shared test spec, named 'job', in the default queue, running `true` unless told otherwise. */
const spec = (over: Partial<JobSpec> = {}): JobSpec => testSpec({ argv: ['true'], name: 'job', queue: '', ...over });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('PBS parity on real Redis: holds, deferral, dependencies, arrays, alter, quotas, fair share', function () {
  let r: TestRedis;
  let driver: FakeDriver;
  let sched: Scheduler;
  let root: string;
  let quotas: QuotaConfig;

  async function open(over: Partial<SchedulerOptions> = {}): Promise<void> {
    sched = new Scheduler(
      schedulerOptions(r, driver, {
        capacity: { ncpus: 8, memMiB: 100_000 },
        lockDurationMs: undefined,
        retryDelayMs: 150,
        quotas: () => quotas,
        ...over,
      }),
    );
    await sched.start();
  }
  const out = (name: string, seq: number | string) => readFileSync(join(root, 'hn1', '/tmp', `${name}.o${seq}`), 'utf8');
  const state = async (id: string) => (await sched.get(ADMIN, id)).state;

  beforeEach(async function () {
    r = await startTestRedis();
    root = join(r.dir, 'hn');
    mkdirSync(root);
    driver = new FakeDriver({ deliverRoot: root, headnodes: new Set(['hn1']) });
    quotas = parseQuotaText('{}', 'quotas.yaml');
    await open();
  });
  afterEach(async function () {
    await stopSchedulerFixture({ sched, driver, r });
  });

  it('-h holds a job (H) until gcqrls; gcqhold takes a queued job out of the queue', async function () {
    const [held] = await sched.submit([spec({ argv: ['echo', 'held'], name: 'h' })], { hold: true });
    await sleep(400);
    expect(await state(held.id)).to.equal('H');
    await sched.release(ADMIN, held.id);
    expect((await sched.waitFor(held.id)).exitStatus).to.equal(0);
    expect(out('h', 1)).to.equal('held\n');

    await sched.close();
    await open({ dispatch: false });
    const [q] = await sched.submit([spec()]);
    await sched.hold(ADMIN, q.id);
    const rec = await sched.get(ADMIN, q.id);
    expect(rec.state).to.equal('H');
    expect(rec.holds).to.equal('u');
    expect(await sched.queue.has(q.id)).to.equal(false, 'a held job is not in BullMQ');
    await sched.release(ADMIN, q.id);
    expect(await sched.queue.has(q.id)).to.equal(true);
  });

  it('-a defers a job (W, BeginTime) and runs it after its time', async function () {
    const [w] = await sched.submit([spec({ argv: ['echo', 'later'], name: 'w' })], { beginAt: Date.now() + 1500 });
    const rec = await sched.get(ADMIN, w.id);
    expect(rec.state).to.equal('W');
    expect(rec.comment).to.match(/^BeginTime/);
    await sleep(500);
    expect(await state(w.id)).to.equal('W');
    const done = await sched.waitFor(w.id);
    expect(done.startedAt).to.be.at.least(rec.beginAt!);
  });

  it('afterok/afternotok/afterany with several parents; an unmeetable dependency deletes the job with a reason', async function () {
    const [a] = await sched.submit([spec({ argv: ['sh', '-c', 'sleep 0.5; exit 0'] })]);
    const [b] = await sched.submit([spec({ argv: ['sh', '-c', 'sleep 0.5; exit 3'] })]);
    const ok = { type: 'afterok' as const, jobIds: [a.id] };
    const [c] = await sched.submit([spec({ argv: ['echo', 'c'], name: 'c' })], { depend: [ok, { type: 'afternotok', jobIds: [b.id] }] });
    const [d] = await sched.submit([spec({ argv: ['echo', 'd'] })], { depend: [{ type: 'afterok', jobIds: [a.id, b.id] }] });
    const [e] = await sched.submit([spec({ argv: ['echo', 'e'] })], { depend: [{ type: 'afterany', jobIds: [b.id] }] });
    const c0 = await sched.get(ADMIN, c.id);
    expect(c0.state).to.equal('H');
    expect(c0.comment).to.match(/^Dependency/);
    expect((await sched.waitFor(c.id)).exitStatus).to.equal(0);
    expect(out('c', c.seq)).to.equal('c\n');
    const dd = await sched.waitFor(d.id);
    expect(dd.exitStatus).to.equal(undefined);
    expect(dd.comment).to.equal(`deleted: dependency afterok:${b.id} can never be met: ${b.id} ended with Exit_status 3`);
    expect((await sched.waitFor(e.id)).exitStatus).to.equal(0);
  });

  it('refuses unknown or already-unmeetable dependencies at submission', async function () {
    let err = '';
    await sched.submit([spec()], { depend: [{ type: 'afterok', jobIds: ['99.srv'] }] }).catch((x: Error) => (err = x.message));
    expect(err).to.equal('-W depend: unknown job 99.srv');
    const [f] = await sched.submit([spec({ argv: ['false'] })]);
    await sched.waitFor(f.id);
    await sched.submit([spec()], { depend: [{ type: 'afterok', jobIds: [f.id] }] }).catch((x: Error) => (err = x.message));
    expect(err).to.equal(`-W depend: afterok:${f.id} can never be met: ${f.id} ended with Exit_status 1`);
  });

  it('arrays: ids 1[].srv and 1[i].srv, PBS_ARRAY_INDEX, one snapshot, %max throttle changeable later, array exit status', async function () {
    const marks = join(r.dir, 'conc');
    writeFileSync(marks, '');
    const script = `echo "idx=$PBS_ARRAY_INDEX of $PBS_ARRAY_ID"; echo + >> ${marks}; sleep 0.4; echo - >> ${marks}`;
    const recs = await sched.submit([spec({ argv: ['sh', '-c', script], name: 'arr' })], { array: { indices: [1, 2, 3, 4, 5, 6], max: 2 } });
    expect(recs.map((x) => x.id)).to.deep.equal(['1[].srv', '1[1].srv', '1[2].srv', '1[3].srv', '1[4].srv', '1[5].srv', '1[6].srv']);
    expect(new Set(recs.slice(1).map((x) => x.snapshotId)).size).to.equal(1);
    expect(driver.snapshots.size).to.equal(1);
    const done = await sched.waitFor('1[].srv');
    const tasks = await sched.list(ADMIN, { includeFinished: true, tasks: true });
    expect(done.exitStatus, JSON.stringify(tasks.map((t) => [t.id, t.exitStatus, t.comment]))).to.equal(0);
    expect(out('arr', '1.4')).to.equal('idx=4 of 1[].srv\n');
    let cur = 0;
    let peak = 0;
    for (const ch of readFileSync(marks, 'utf8').trim().split('\n')) {
      cur += ch === '+' ? 1 : -1;
      peak = Math.max(peak, cur);
    }
    expect(peak).to.equal(2, 'never more than %2 tasks at once');
    expect(driver.snapshots.size).to.equal(0, 'the shared snapshot went with the last task');
    const listed = await sched.list(ADMIN, { includeFinished: true });
    expect(listed.map((x) => x.id)).to.deep.equal(['1[].srv'], 'tasks only with -t');

    // Throttle changed after submission: 0 removes it.
    writeFileSync(marks, '');
    const [parent] = await sched.submit([spec({ argv: ['sh', '-c', script], name: 'arr2' })], { array: { indices: [1, 2, 3, 4], max: 1 }, hold: true });
    await sched.alter(ADMIN, parent.id, { throttle: 4 });
    await sched.release(ADMIN, parent.id);
    await sched.waitFor(parent.id);
    cur = 0;
    peak = 0;
    for (const ch of readFileSync(marks, 'utf8').trim().split('\n')) {
      cur += ch === '+' ? 1 : -1;
      peak = Math.max(peak, cur);
    }
    expect(peak).to.be.greaterThan(1, 'the raised throttle let tasks run together');
  });

  it('gcqalter changes name, priority, walltime and start time of a job that has not started', async function () {
    await sched.close();
    await open({ dispatch: false });
    const [j] = await sched.submit([spec({ name: 'before' })], { beginAt: Date.now() + 3_600_000 });
    await sched.alter(ADMIN, j.id, { name: 'after', priority: 100, walltimeSec: 60, beginAt: 0 });
    const rec = await sched.get(ADMIN, j.id);
    expect([rec.spec.name, rec.spec.priority, rec.spec.walltimeSec, rec.state, rec.beginAt]).to.deep.equal(['after', 100, 60, 'Q', undefined]);
    const bull = await sched.queue.queue.getJob(j.id);
    expect(bull?.opts.delay ?? 0).to.equal(0);
  });

  it('quotas: max_queued refuses with the limit named; max_running keeps jobs queued with a reason; reload applies without losing jobs', async function () {
    quotas = parseQuotaText('defaults:\n  max_queued: 3\n  max_running: 1\n', 'quotas.yaml');
    const first = await sched.submit([spec({ argv: ['sleep', '1'] }), spec({ argv: ['sleep', '1'] }), spec({ argv: ['true'] })]);
    let err = '';
    await sched.submit([spec()]).catch((x: Error) => (err = x.message));
    expect(err).to.equal('would exceed max_queued=3 for user alice (has 3 queued or running, submitting 1)');
    const reason = await until('a UserMaxRun reason', async () => {
      const w = await sched.get(ADMIN, first[1].id);
      return w.state === 'Q' && w.comment?.startsWith('UserMaxRun') ? w.comment : undefined;
    });
    expect(reason).to.equal('UserMaxRun: alice has 1 of max_running=1');
    quotas = parseQuotaText('defaults:\n  max_queued: 10\n  max_running: 3\n', 'quotas.yaml');
    for (const j of first) expect((await sched.waitFor(j.id)).exitStatus).to.equal(0);
    const all = await sched.list(ADMIN, { includeFinished: true });
    expect(all.every((j) => j.runCount === 1)).to.equal(true, 'no job lost or run twice');
  });

  it('recurring jobs: each firing submits with a fresh snapshot; listed, paused, resumed, removed', async function () {
    // Six-field pattern (every second) for the test; gcqsub --cron takes the five-field form.
    const c = await sched.recurring.create('* * * * * *', spec({ argv: ['echo', 'tick'], name: 'tick' }));
    expect(c.id).to.equal('cron1.srv');
    await until('two firings', async () => (await sched.list(ADMIN, { includeFinished: true })).length >= 2);
    const fired = await sched.list(ADMIN, { includeFinished: true });
    expect(fired.length).to.be.at.least(2);
    expect(new Set(fired.map((j) => j.snapshotId)).size).to.equal(fired.length, 'a fresh snapshot per firing');
    expect((await sched.recurring.list(ADMIN))[0].lastJob).to.match(/^\d+\.srv$/);
    await sched.hold(ADMIN, 'cron1');
    await sleep(300);
    const n = (await sched.list(ADMIN, { includeFinished: true })).length;
    await sleep(2200);
    expect((await sched.list(ADMIN, { includeFinished: true })).length).to.equal(n, 'paused: no firing');
    expect((await sched.recurring.list(ADMIN))[0].paused).to.equal(true);
    await sched.release(ADMIN, 'cron1');
    await until('a firing after resume', async () => (await sched.list(ADMIN, { includeFinished: true })).length > n);
    expect((await sched.list(ADMIN, { includeFinished: true })).length).to.be.greaterThan(n, 'resumed');
    await sched.delete(ADMIN, 'cron1.srv');
    expect(await sched.recurring.list(ADMIN)).to.deep.equal([]);
    let err = '';
    await sched.delete(ADMIN, 'cron1.srv').catch((e: Error) => (err = e.message));
    expect(err).to.equal('unknown recurring job cron1.srv');
  });

  it('fair share: a user with a big backlog does not starve a later user; shares 3:1 give 3:1 turns', async function () {
    await sched.close();
    quotas = parseQuotaText('users:\n  alice:\n    shares: 3\n  bob:\n    shares: 1\n', 'quotas.yaml');
    await open({ dispatch: false });
    const order = join(r.dir, 'order');
    writeFileSync(order, '');
    await sched.submit(Array.from({ length: 30 }, () => spec({ user: 'alice', argv: ['sh', '-c', `echo a >> ${order}`] })));
    await sched.submit(Array.from({ length: 30 }, () => spec({ user: 'bob', argv: ['sh', '-c', `echo b >> ${order}`] })));
    await sched.close();
    await open({ concurrency: 1, capacity: { ncpus: 1, memMiB: 100_000 } });
    await until('24 jobs ran', () => readFileSync(order, 'utf8').length >= 2 * 24, 60_000);
    const first24 = readFileSync(order, 'utf8').trim().split('\n').slice(0, 24);
    const a = first24.filter((x) => x === 'a').length;
    expect(a).to.be.within(16, 20, `alice (shares 3) gets ~3 of 4 turns: ${first24.join('')}`);
  });
});
