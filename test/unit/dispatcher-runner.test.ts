import { expect } from 'chai';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { EXIT, type JobRecord, type JobSpec } from '../../src/queue/job.js';
import type { JobTransition } from '../../src/queue/job-events.js';
import { JobStore } from '../../src/queue/job-store.js';
import { keysFor } from '../../src/queue/keys.js';
import { RunQueue } from '../../src/queue/run-queue.js';
import { Capacity } from '../../src/scheduler/capacity.js';
import { Dispatcher, type DispatchHost } from '../../src/scheduler/dispatcher.js';
import { JobRunner } from '../../src/scheduler/runner.js';
import { redisOptions, startTestRedis, type TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { testRecord, testSpec } from '../helpers/jobs.js';

const keys = keysFor('u');

describe('JobRunner and Dispatcher (test-double driver, real redis-server)', function () {
  let r: TestRedis;
  let driver: FakeDriver;
  let store: JobStore;
  let runner: JobRunner;
  let deliverRoot: string;
  let spoolDir: string;
  let seq = 0;
  let heard: JobTransition[];
  const dispatchers: Dispatcher[] = [];
  const queues: RunQueue[] = [];

  beforeEach(async function () {
    r = await startTestRedis();
    deliverRoot = join(r.dir, 'headnodes');
    spoolDir = join(r.dir, 'spool');
    mkdirSync(deliverRoot);
    driver = new FakeDriver({ deliverRoot, headnodes: new Set(['hn1']) });
    store = new JobStore(r.client, keys, 'srv');
    heard = [];
    store.events.subscribe((t) => void heard.push(t));
    runner = new JobRunner({ driver, store, spoolDir, killDelayMs: 300, historyTtlSec: 600 });
  });

  afterEach(async function () {
    for (const d of dispatchers.splice(0)) await d.close();
    for (const q of queues.splice(0)) await q.close();
    await driver.close();
    await r.stop();
  });

  async function make(state: JobRecord['state'], spec: Partial<JobSpec> = {}): Promise<JobRecord> {
    const snap = await driver.snapshot('hn1');
    const rec = testRecord(++seq, state, { snapshotId: snap.id, spec: testSpec(spec) });
    await store.create([rec]);
    return rec;
  }

  function eventsOf(id: string): string[] {
    return heard.filter((t) => t.jobId === id).map((t) => `${t.from}>${t.to}:${t.event}`);
  }

  function dispatcher(o: { capacity?: Capacity; retryDelayMs?: number; host?: DispatchHost } = {}): { d: Dispatcher; queue: RunQueue } {
    const queue = new RunQueue(redisOptions(r.target), keys);
    const d = new Dispatcher({
      connection: redisOptions(r.target),
      keys,
      store,
      runner,
      capacity: o.capacity ?? new Capacity({ ncpus: 4, memMiB: 4096 }),
      concurrency: 4,
      lockDurationMs: 4000,
      retryDelayMs: o.retryDelayMs ?? 200,
      ...(o.host ? { host: o.host } : {}),
    });
    dispatchers.push(d);
    queues.push(queue);
    return { d, queue };
  }

  describe('JobRunner', function () {
    it('runs a job R -> E -> F: output delivered, clone and spool gone, snapshot released', async function () {
      const rec = await make('Q');
      const t = await store.transition(rec.id, 'run');
      expect(t.ok).to.equal(true);
      const out = await runner.run({ ...rec, state: 'R', runCount: 1 }, new AbortController().signal);
      expect(out.requeue).to.equal(false);
      const done = await store.get(rec.id);
      expect([done.state, done.exitStatus, done.comment]).to.deep.equal(['F', 0, 'Job run, exit 0']);
      expect(readFileSync(join(deliverRoot, 'hn1', `/tmp/STDIN.o${rec.seq}`), 'utf8')).to.equal('hello\n');
      expect(readFileSync(join(deliverRoot, 'hn1', `/tmp/STDIN.e${rec.seq}`), 'utf8')).to.equal('oops\n');
      expect(eventsOf(rec.id)).to.deep.equal(['Q>R:run', 'R>E:exit', 'E>F:finish']);
      expect(driver.clones.size).to.equal(0);
      expect(readdirSync(spoolDir)).to.deep.equal([]);
      expect(driver.snapshots.has(rec.snapshotId!)).to.equal(false);
    });

    it('a gcd shutdown requeues a rerunnable job (R -> Q) and ends a -r n one with Exit_status -3', async function () {
      const a = await make('Q', { argv: ['sleep', '30'] });
      const b = await make('Q', { argv: ['sleep', '30'], rerunnable: false });
      for (const j of [a, b]) await store.transition(j.id, 'run');
      const stop = new AbortController();
      const runs = [a, b].map((j) => runner.run({ ...j, state: 'R', runCount: 1 }, stop.signal));
      await until('both commands running', () => driver.clones.size === 2);
      await new Promise((res) => setTimeout(res, 200));
      stop.abort('shutdown');
      const [ra, rb] = await Promise.all(runs);
      expect([ra.requeue, rb.requeue]).to.deep.equal([true, false]);
      const qa = await store.get(a.id);
      expect([qa.state, qa.cloneId]).to.deep.equal(['Q', undefined]);
      expect(driver.snapshots.has(a.snapshotId!), 'a still needs its snapshot').to.equal(true);
      const fb = await store.get(b.id);
      expect([fb.state, fb.exitStatus]).to.deep.equal(['F', EXIT.LOST]);
      expect(eventsOf(a.id)).to.deep.equal(['Q>R:run', 'R>Q:requeue']);
      expect(driver.clones.size).to.equal(0);
    });

    it('a job whose clone cannot start ends F with Exit_status -1 and a reason', async function () {
      const rec = await make('Q');
      await driver.releaseSnapshot(rec.snapshotId!);
      await store.transition(rec.id, 'run');
      await runner.run({ ...rec, state: 'R', runCount: 1 }, new AbortController().signal);
      const f = await store.get(rec.id);
      expect(f.state).to.equal('F');
      expect(f.exitStatus).to.equal(EXIT.START_FAILED);
      expect(f.comment).to.match(/^job failed to run: .*snapshot/);
      expect(eventsOf(rec.id)).to.deep.equal(['Q>R:run', 'R>F:finish']);
    });
  });

  describe('Dispatcher', function () {
    it('takes a queued job and runs it to F, once', async function () {
      const rec = await make('Q');
      const { d, queue } = dispatcher();
      d.start();
      await queue.add([rec]);
      await until('finished', async () => (await store.get(rec.id)).state === 'F');
      const f = await store.get(rec.id);
      expect([f.exitStatus, f.runCount]).to.deep.equal([0, 1]);
      expect(eventsOf(rec.id)).to.deep.equal(['Q>R:run', 'R>E:exit', 'E>F:finish']);
    });

    it('drops a job that is already R elsewhere (as after a BullMQ lock loss): no clone, no state write', async function () {
      const rec = await make('Q', { argv: ['sleep', '30'] });
      // Another runner won it: the record is R, but BullMQ hands the job out again.
      expect((await store.transition(rec.id, 'run')).ok).to.equal(true);
      heard.length = 0;
      const { d, queue } = dispatcher();
      let cloned = 0;
      const clone = driver.clone.bind(driver);
      driver.clone = async (o) => {
        cloned++;
        return clone(o);
      };
      d.start();
      await queue.add([{ ...rec, state: 'Q' }]);
      await until('BullMQ job handled', async () => !(await queue.has(rec.id)));
      const now = await store.get(rec.id);
      expect([now.state, now.runCount]).to.deep.equal(['R', 0]);
      expect(cloned).to.equal(0);
      expect(heard).to.deep.equal([]);
      expect(d.isRunning(rec.id)).to.equal(false);
    });

    it('two dispatchers on one queue: 12 jobs, each run exactly once', async function () {
      const recs: JobRecord[] = [];
      for (let i = 0; i < 12; i++) recs.push(await make('Q', { argv: ['sh', '-c', 'sleep 0.2; echo x'] }));
      const [one, two] = [dispatcher(), dispatcher()];
      one.d.start();
      two.d.start();
      await one.queue.add(recs);
      await until('all finished', async () => (await Promise.all(recs.map((x) => store.get(x.id)))).every((x) => x.state === 'F'), 60_000);
      for (const x of recs) {
        const f = await store.get(x.id);
        expect([f.exitStatus, f.runCount]).to.deep.equal([0, 1]);
        expect(eventsOf(x.id).filter((e) => e.endsWith(':run'))).to.have.length(1);
        expect(eventsOf(x.id).filter((e) => e.endsWith(':finish'))).to.have.length(1);
      }
    });

    it('on a grid, a full host leaves waiting jobs to the others: none is taken, delayed or commented; a host with room runs them', async function () {
      const gate = join(r.dir, 'go-grid');
      const one = { ncpus: 1, memMiB: 0 };
      const host = (name: string): DispatchHost => ({ name, gate: async () => undefined, gateDelayMs: 200, othersTakeJobs: () => true });
      const blocker = await make('Q', { resources: one, argv: ['sh', '-c', `while [ ! -e ${gate} ]; do sleep 0.05; done`] });
      const waiting = [await make('Q', { resources: one, argv: ['true'] }), await make('Q', { resources: one, argv: ['true'] })];
      // A long retry delay: a job this host looked at and sent back would wait 30 s.
      const a = dispatcher({ capacity: new Capacity({ ncpus: 1, memMiB: 4096 }), retryDelayMs: 30_000, host: host('a') });
      a.d.start();
      await a.queue.add([blocker]);
      await until('blocker running on a', async () => (await store.get(blocker.id)).state === 'R');
      await a.queue.add(waiting);
      await new Promise((res) => setTimeout(res, 1000));
      for (const w of waiting) {
        expect(eventsOf(w.id), 'the full host did not take it').to.deep.equal([]);
        expect((await store.get(w.id)).comment).to.equal(undefined);
      }
      // Another host with room takes both, at once (not 30 s later).
      const b = dispatcher({ capacity: new Capacity({ ncpus: 2, memMiB: 4096 }), retryDelayMs: 30_000, host: host('b') });
      b.d.start();
      await until(
        'both ran on b',
        async () => (await Promise.all(waiting.map((w) => store.get(w.id)))).every((w) => w.state === 'F' && w.execHost === 'b'),
        10_000,
      );
      writeFileSync(gate, '');
      await until('blocker finished', async () => (await store.get(blocker.id)).state === 'F');
    });

    it('a job that does not fit is deferred with its reason and stays Q (a W job becomes Q)', async function () {
      const rec = await make('W', { resources: { ncpus: 8, memMiB: 0 } });
      const { d, queue } = dispatcher();
      d.start();
      await queue.add([{ ...rec, state: 'Q' }]);
      await until('deferred', async () => eventsOf(rec.id).includes('W>Q:defer'));
      const q = await store.get(rec.id);
      expect(q.state).to.equal('Q');
      expect(q.comment).to.match(/cpus|Resources/i);
    });

    describe('deferred jobs keep their priority order', function () {
      // One cpu; alice's first job holds it until the test lets it end. The retry delay is long,
      // so only the dispatcher's own ordering (not a delay running out) can start a job soon.
      const retryDelayMs = 30_000;
      const small = { ncpus: 1, memMiB: 0 };
      let gate: string;

      beforeEach(function () {
        gate = join(r.dir, 'go');
      });

      function runOrder(ids: string[]): string[] {
        return heard.filter((t) => t.event === 'run' && ids.includes(t.jobId)).map((t) => t.jobId);
      }

      it('freed capacity goes to the better-priority deferred job, not to the one deferred first', async function () {
        const blocker = await make('Q', { user: 'alice', resources: small, argv: ['sh', '-c', `while [ ! -e ${gate} ]; do sleep 0.05; done`] });
        const aliceNext = await make('Q', { user: 'alice', resources: small, argv: ['true'] });
        const bob = await make('Q', { user: 'bob', resources: small, argv: ['true'] });
        const { d, queue } = dispatcher({ capacity: new Capacity({ ncpus: 1, memMiB: 4096 }), retryDelayMs });
        d.start();
        await queue.add([blocker]);
        await until('blocker running', async () => (await store.get(blocker.id)).state === 'R');
        // alice's second job is deferred before bob's exists, so its delay would end first.
        await queue.add([aliceNext]);
        await until('alice deferred', async () => eventsOf(aliceNext.id).includes('Q>Q:defer'));
        await queue.add([bob]);
        await until('bob deferred', async () => eventsOf(bob.id).includes('Q>Q:defer'));
        expect((await store.get(bob.id)).comment).to.match(/^Resources: waiting for 1 cpus/);
        writeFileSync(gate, '');
        await until('both ran', async () => (await store.get(aliceNext.id)).state === 'F' && (await store.get(bob.id)).state === 'F', 20_000);
        expect(runOrder([aliceNext.id, bob.id])).to.deep.equal([bob.id, aliceNext.id]);
        for (const id of [blocker.id, aliceNext.id, bob.id]) expect(eventsOf(id).filter((e) => e.endsWith(':run'))).to.have.length(1);
      });

      it('a newly queued job with a worse priority steps back for a deferred job that now fits', async function () {
        const capacity = new Capacity({ ncpus: 1, memMiB: 4096 });
        const blocker = await make('Q', { user: 'alice', resources: small, argv: ['sh', '-c', `while [ ! -e ${gate} ]; do sleep 0.05; done`] });
        const bob = await make('Q', { user: 'bob', resources: small, argv: ['true'] });
        const aliceNext = await make('Q', { user: 'alice', resources: small, argv: ['true'] });
        const { d, queue } = dispatcher({ capacity, retryDelayMs });
        d.start();
        await queue.add([blocker, bob]);
        await until('blocker running, bob deferred', async () => (await store.get(blocker.id)).state === 'R' && eventsOf(bob.id).includes('Q>Q:defer'));
        // The admin gives the host a second cpu: no job ended, so nothing was released.
        capacity.limits = { ncpus: 2, memMiB: 4096 };
        await queue.add([aliceNext]);
        await until('both ran', async () => (await store.get(aliceNext.id)).state === 'F' && (await store.get(bob.id)).state === 'F', 20_000);
        expect(runOrder([aliceNext.id, bob.id])).to.deep.equal([bob.id, aliceNext.id]);
        expect(eventsOf(aliceNext.id)[0]).to.equal('Q>Q:defer');
        writeFileSync(gate, '');
        await until('blocker finished', async () => (await store.get(blocker.id)).state === 'F');
      });
    });
  });
});
