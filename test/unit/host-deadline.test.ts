import { expect } from 'chai';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CloneHandle, ExecResult, ExecSpec, KillSignal, RunningCommand } from '../../src/drivers/driver.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { DriverError } from '../../src/errors.js';
import { EXIT, type JobRecord, type JobSpec } from '../../src/queue/job.js';
import { JobStore } from '../../src/queue/job-store.js';
import { keysFor } from '../../src/queue/keys.js';
import { MAX_TIMER_MS, setLongTimeout } from '../../src/scheduler/long-timer.js';
import { JobRunner } from '../../src/scheduler/runner.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { testRecord, testSpec } from '../helpers/jobs.js';

/**
 * A driver whose guest does not obey: kills go nowhere (`deaf`: they never answer, like a
 * stopped guest agent; `liar`: they say done and do nothing), and the command's end is only
 * seen when the host destroys the clone (as the QEMU driver's poller fails when its VM dies).
 */
class HostileGuestDriver extends FakeDriver {
  destroyed: string[] = [];
  private readonly ends = new Map<string, (e: Error) => void>();
  constructor(
    root: string,
    private readonly kind: 'deaf' | 'liar',
  ) {
    super({ deliverRoot: root, headnodes: new Set(['hn1']) });
  }

  override async exec(clone: CloneHandle, spec: ExecSpec): Promise<RunningCommand> {
    const real = await super.exec(clone, spec);
    void real.done.catch(() => undefined);
    const done = new Promise<ExecResult>((_resolve, reject) => this.ends.set(clone.cloneId, reject));
    const kill = (_s: KillSignal): Promise<void> => (this.kind === 'deaf' ? new Promise<void>(() => undefined) : Promise.resolve());
    return { done, kill };
  }

  override async destroy(cloneId: string): Promise<void> {
    this.destroyed.push(cloneId);
    this.ends.get(cloneId)?.(new DriverError(`clone '${cloneId}' was destroyed while the command ran`));
    this.ends.delete(cloneId);
    await super.destroy(cloneId);
  }
}

const keys = keysFor('hd');

describe('host-side deadlines (issue 13 items 4 and 12; test-double driver, real redis-server)', function () {
  this.timeout(60_000);
  let r: TestRedis;
  let store: JobStore;
  let seq = 0;
  const KILL_DELAY = 200;
  const DEADLINE = 500;

  beforeEach(async () => {
    r = await startTestRedis();
    store = new JobStore(r.client, keys, 'srv');
  });
  afterEach(async () => {
    await r.stop();
  });

  function setup(kind: 'deaf' | 'liar' | 'honest'): { driver: FakeDriver & { destroyed?: string[] }; runner: JobRunner } {
    const root = join(r.dir, 'headnodes');
    mkdirSync(root, { recursive: true });
    const driver = kind === 'honest' ? new FakeDriver({ deliverRoot: root, headnodes: new Set(['hn1']) }) : new HostileGuestDriver(root, kind);
    const runner = new JobRunner({ driver, store, spoolDir: join(r.dir, 'spool'), killDelayMs: KILL_DELAY, guestDeadlineMs: DEADLINE, historyTtlSec: 600 });
    return { driver, runner };
  }

  async function running(driver: FakeDriver, spec: Partial<JobSpec>): Promise<JobRecord> {
    const snap = await driver.snapshot('hn1');
    const rec = testRecord(++seq, 'Q', { snapshotId: snap.id, spec: testSpec(spec) });
    await store.create([rec]);
    await store.transition(rec.id, 'run');
    return { ...rec, state: 'R', runCount: 1 };
  }

  for (const kind of ['deaf', 'liar'] as const) {
    it(`walltime: a ${kind} guest's job ends by kill delay + deadline, its clone destroyed by the host`, async () => {
      const { driver, runner } = setup(kind);
      const job = await running(driver, { argv: ['sleep', '30'], walltimeSec: 1 });
      const t0 = Date.now();
      await runner.run(job, new AbortController().signal);
      const took = Date.now() - t0;
      expect(took).to.be.within(1000 + KILL_DELAY + DEADLINE - 50, 1000 + KILL_DELAY + DEADLINE + 2000);
      const f = await store.get(job.id);
      expect([f.state, f.exitStatus]).to.deep.equal(['F', EXIT.WALLTIME]);
      expect(f.comment).to.match(/^walltime 1s exceeded: killed \(exit 265\); the guest did not end the job 1s after SIGTERM; its VM was killed$/);
      expect((driver as HostileGuestDriver).destroyed).to.include(`j${job.seq}-r1`);
      expect(driver.clones.size).to.equal(0);
    });
  }

  it('gcqdel of a job whose guest does not answer ends it by the deadline', async () => {
    const { driver, runner } = setup('deaf');
    const job = await running(driver, { argv: ['sleep', '30'] });
    const stop = new AbortController();
    const run = runner.run(job, stop.signal);
    await new Promise((res) => setTimeout(res, 300));
    const t0 = Date.now();
    stop.abort('deleted');
    await run;
    expect(Date.now() - t0).to.be.below(KILL_DELAY + DEADLINE + 1500);
    const f = await store.get(job.id);
    expect(f.state).to.equal('F');
    expect(f.comment).to.match(/^deleted by gcqdel while running; .*its VM was killed$/);
  });

  it('a gcd shutdown is not held up by a guest that does not answer: the job is requeued in bound', async () => {
    const { driver, runner } = setup('deaf');
    const job = await running(driver, { argv: ['sleep', '30'], rerunnable: true });
    const stop = new AbortController();
    const run = runner.run(job, stop.signal);
    await new Promise((res) => setTimeout(res, 300));
    const t0 = Date.now();
    stop.abort('shutdown');
    expect((await run).requeue).to.equal(true);
    expect(Date.now() - t0).to.be.below(KILL_DELAY + DEADLINE + 1500);
    expect((await store.get(job.id)).state).to.equal('Q');
  });

  it('an honest guest is not hit by the deadline: SIGTERM ends the job, no forced kill', async () => {
    const { driver, runner } = setup('honest');
    const job = await running(driver, { argv: ['sleep', '30'], walltimeSec: 1 });
    await runner.run(job, new AbortController().signal);
    const f = await store.get(job.id);
    expect(f.comment).to.equal('walltime 1s exceeded: killed (exit 271)');
  });

  describe('walltime above 24.8 days (item 12)', () => {
    it("Node's own setTimeout fires at once past 2^31-1 ms: the reason for the long timer", async () => {
      const prev = process.listeners('warning');
      process.removeAllListeners('warning'); // TimeoutOverflowWarning is expected here
      try {
        const fired = await new Promise<boolean>((resolve) => {
          const t = setTimeout(() => resolve(true), MAX_TIMER_MS + 1);
          setTimeout(() => {
            clearTimeout(t);
            resolve(false);
          }, 200);
        });
        expect(fired).to.equal(true);
      } finally {
        for (const l of prev) process.on('warning', l);
      }
    });

    it('setLongTimeout chains timers no longer than the limit and fires only when the time has come', () => {
      const armed: Array<{ fn: () => void; ms: number }> = [];
      const realSet = globalThis.setTimeout;
      let now = 1_000_000;
      let fired = 0;
      (globalThis as { setTimeout: unknown }).setTimeout = (fn: () => void, ms: number) => {
        armed.push({ fn, ms });
        return realSet(() => undefined, 0);
      };
      try {
        const thirtyDays = 30 * 86_400_000;
        setLongTimeout(
          () => fired++,
          thirtyDays,
          () => now,
        );
        for (let i = 0; i < 10 && fired === 0; i++) {
          const next = armed.shift()!;
          expect(next.ms).to.be.at.most(MAX_TIMER_MS);
          now += next.ms;
          next.fn();
        }
        expect(fired).to.equal(1);
        expect(now - 1_000_000).to.equal(thirtyDays);
        // A cleared timer never fires.
        let other = 0;
        const t = setLongTimeout(
          () => other++,
          thirtyDays,
          () => now,
        );
        t.clear();
        expect(armed.length).to.equal(1);
      } finally {
        globalThis.setTimeout = realSet;
      }
    });

    it('a job with a 30-day walltime runs to its own end (not killed at once)', async () => {
      const { driver, runner } = setup('honest');
      const job = await running(driver, { argv: ['sh', '-c', 'sleep 1; echo done'], walltimeSec: 30 * 86_400 });
      await runner.run(job, new AbortController().signal);
      const f = await store.get(job.id);
      expect([f.exitStatus, f.comment]).to.deep.equal([0, 'Job run, exit 0']);
    });
  });
});
