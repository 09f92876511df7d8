import { expect } from 'chai';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { connectRedis } from '../../src/redis/connection.js';
import type { JobRecord, JobState } from '../../src/queue/job.js';
import type { JobTransition } from '../../src/queue/job-events.js';
import { JobStore } from '../../src/queue/job-store.js';
import { JOB_EVENTS, JOB_TRANSITIONS, JobStateError, fromStates, nextState } from '../../src/queue/job-states.js';
import { keysFor } from '../../src/queue/keys.js';
import { JobRunner } from '../../src/scheduler/runner.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { testRecord } from '../helpers/jobs.js';

const STATES: JobState[] = ['Q', 'H', 'W', 'R', 'S', 'E', 'F', 'B'];
const keys = keysFor('t');

describe('job state machine (real redis-server)', function () {
  let r: TestRedis;
  let store: JobStore;
  let seq = 0;

  before(async function () {
    r = await startTestRedis();
    store = new JobStore(r.client, keys, 'srv');
  });
  after(async function () {
    await r.stop();
  });

  async function make(state: JobState, over: Partial<JobRecord> = {}): Promise<JobRecord> {
    const rec = testRecord(++seq, state, over);
    await store.create([rec]);
    return rec;
  }

  it('every transition in the table moves the state, writes the patch and is heard once', async function () {
    let tried = 0;
    for (const event of JOB_EVENTS) {
      for (const from of fromStates(event)) {
        const rec = await make(from);
        const heard: JobTransition[] = [];
        const off = store.events.subscribe((t) => void heard.push(t));
        const res = await store.transition(rec.id, event, { comment: `by ${event}` });
        off();
        const to = nextState(event, from)!;
        expect(res.ok, `${event} from ${from}`).to.equal(true);
        const now = await store.get(rec.id);
        expect(now.state, `${event} from ${from}`).to.equal(to);
        expect(now.comment).to.equal(`by ${event}`);
        expect(heard.map((h) => [h.jobId, h.event, h.from, h.to, h.record.state])).to.deep.equal([[rec.id, event, from, to, to]]);
        tried++;
      }
    }
    expect(tried).to.equal(Object.values(JOB_TRANSITIONS).reduce((n, row) => n + Object.keys(row).length, 0));
  });

  it('a transition not in the table is refused with a JobStateError, nothing written, nothing heard', async function () {
    let refused = 0;
    for (const event of JOB_EVENTS) {
      for (const from of STATES.filter((s) => nextState(event, s) === undefined)) {
        const rec = await make(from, { comment: 'before' });
        const heard: JobTransition[] = [];
        const off = store.events.subscribe((t) => void heard.push(t));
        const res = await store.transition(rec.id, event, { comment: 'after' });
        off();
        expect(res.ok, `${event} from ${from}`).to.equal(false);
        if (res.ok) continue;
        expect(res.error).to.be.instanceOf(JobStateError);
        expect([res.error.job, res.error.from, res.error.event]).to.deep.equal([rec.id, from, event]);
        const now = await store.get(rec.id);
        expect([now.state, now.comment]).to.deep.equal([from, 'before']);
        expect(heard).to.deep.equal([]);
        refused++;
      }
    }
    expect(refused).to.be.greaterThan(50);
    const gone = await store.transition('999999.srv', 'run');
    expect(gone.ok).to.equal(false);
    if (!gone.ok) expect([gone.from, gone.error.from]).to.deep.equal([undefined, undefined]);
    expect(await r.client.exists(keys.job('999999.srv'))).to.equal(0, 'a refused write creates no record');
  });

  it('update() writes fields but never re-creates a record that is gone', async function () {
    await store.update('888888.srv', { comment: 'ghost' });
    expect(await r.client.exists(keys.job('888888.srv'))).to.equal(0);
  });

  it('two runners racing for one queued job: exactly one wins, 50 times over', async function () {
    const clients: Redis[] = [await connectRedis(r.target), await connectRedis(r.target)];
    try {
      const stores = clients.map((c) => new JobStore(c, keys, 'srv'));
      for (let i = 0; i < 50; i++) {
        const rec = await make(i % 2 ? 'Q' : 'W');
        const results = await Promise.all(stores.map((s) => s.transition(rec.id, 'run')));
        expect(results.filter((x) => x.ok)).to.have.length(1);
        const loser = results.find((x) => !x.ok);
        if (loser && !loser.ok) expect(loser.from).to.equal('R');
      }
    } finally {
      for (const c of clients) c.disconnect();
    }
  });

  it('gcqdel racing the dispatcher for a queued job: either it runs or it is deleted, never both', async function () {
    for (let i = 0; i < 30; i++) {
      const rec = await make('Q');
      const [run, del] = await Promise.all([store.transition(rec.id, 'run'), store.transition(rec.id, 'delete')]);
      expect(Number(run.ok) + Number(del.ok)).to.equal(1);
      expect((await store.get(rec.id)).state).to.equal(run.ok ? 'R' : 'F');
    }
  });

  it('finish twice: the second is a no-op (snapshot released once, settled once)', async function () {
    const deliverRoot = join(r.dir, 'deliver');
    mkdirSync(deliverRoot, { recursive: true });
    const driver = new FakeDriver({ deliverRoot, headnodes: new Set(['hn1']) });
    const snap = await driver.snapshot('hn1');
    // Two jobs share the snapshot: it must survive the first finishing, however often.
    const a = await make('R', { snapshotId: snap.id });
    const b = await make('Q', { snapshotId: snap.id });
    const settled: string[] = [];
    const runner = new JobRunner({
      driver, store, spoolDir: join(r.dir, 'spool'), killDelayMs: 100, historyTtlSec: 60,
      onFinished: async (j) => void settled.push(j.id),
    });
    const first = await runner.finish(a, { exitStatus: 0, comment: 'done' });
    const second = await runner.finish(a, { exitStatus: 1, comment: 'again' });
    expect(first.ok).to.equal(true);
    expect(second.ok).to.equal(false);
    if (!second.ok) expect(second.from).to.equal('F');
    const fa = await store.get(a.id);
    expect([fa.state, fa.exitStatus, fa.comment, fa.settling]).to.deep.equal(['F', 0, 'done', undefined]);
    expect(settled).to.deep.equal([a.id]);
    expect(driver.snapshots.has(snap.id)).to.equal(true, 'b still needs the snapshot');
    expect((await store.snapshotRefs()).get(snap.id)).to.equal(1);
    // Settling again (as gcd's start does after a crash) drops nothing twice.
    await runner.settle(fa);
    expect((await store.snapshotRefs()).get(snap.id)).to.equal(1);
    expect(driver.snapshots.has(snap.id)).to.equal(true);
    expect(await r.client.ttl(keys.job(a.id))).to.be.within(1, 60);
    const del = await runner.finish(b, { comment: 'deleted' }, 'delete');
    expect(del.ok).to.equal(true);
    expect(driver.snapshots.has(snap.id)).to.equal(false, 'the last reference went: the snapshot is released');
    expect((await store.snapshotRefs()).has(snap.id)).to.equal(false);
    await driver.close();
  });

  it('finish of a running job by gcqdel is refused (delete is only before it starts)', async function () {
    const rec = await make('R');
    const runner = new JobRunner({ driver: new FakeDriver({ deliverRoot: r.dir, headnodes: new Set() }), store, spoolDir: join(r.dir, 'spool'), killDelayMs: 100, historyTtlSec: 60 });
    const res = await runner.finish(rec, { comment: 'deleted' }, 'delete');
    expect(res.ok).to.equal(false);
    if (!res.ok) expect([res.from, res.error.event]).to.deep.equal(['R', 'delete']);
    expect((await store.get(rec.id)).state).to.equal('R');
  });
});
