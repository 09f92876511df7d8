import { expect } from 'chai';
import { parseQuotaText, type QuotaConfig } from '../../src/config/quotas.js';
import { BULL_PRIORITY_MAX, FairOrder, type FairJob } from '../../src/scheduler/fair-order.js';

const cfgOf = (...l: string[]): QuotaConfig => parseQuotaText(l.join('\n') + '\n', 'quotas.yaml');

interface Queued {
  job: FairJob & { id: string };
  vstart: number;
  bullPriority: number;
  order: number;
}

/** A run queue as BullMQ keeps it: lowest priority number first, then first added. */
class SimQueue {
  private readonly q: Queued[] = [];
  private n = 0;
  constructor(readonly fair: FairOrder) {}

  add(user: string, count: number, over: Partial<FairJob> = {}): void {
    for (let i = 0; i < count; i++) {
      const job = { id: `${user}.${this.n}`, user, group: 'g', queue: 'workq', priority: 0, ncpus: 1, ...over };
      const t = this.fair.tag(job);
      expect(t.bullPriority).to.be.within(1, BULL_PRIORITY_MAX);
      this.q.push({ job, ...t, order: this.n++ });
    }
  }

  /** Start the next `count` jobs (each tells FairOrder it was dispatched). */
  take(count: number): Array<FairJob & { id: string }> {
    this.q.sort((a, b) => a.bullPriority - b.bullPriority || a.order - b.order);
    const out = this.q.splice(0, count);
    for (const e of out) this.fair.dispatched(e.vstart);
    return out.map((e) => e.job);
  }
}

function tally(jobs: FairJob[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const j of jobs) out[j.user] = (out[j.user] ?? 0) + 1;
  return out;
}

describe('FairOrder (fair share as BullMQ priorities)', function () {
  it('shares 3:1 give 300 of the first 400 turns to alice, 100 to bob', function () {
    const q = new SimQueue(new FairOrder(() => cfgOf('users:', '  alice: {shares: 3}', '  bob: {shares: 1}')));
    q.add('alice', 1000);
    q.add('bob', 1000);
    const t = tally(q.take(400));
    expect(t.alice).to.be.within(294, 306);
    expect(t.bob).to.be.within(94, 106);
  });

  it('cpus count, not jobs: a user of 4-cpu jobs gets a quarter of the turns', function () {
    const q = new SimQueue(new FairOrder(() => cfgOf('defaults: {shares: 1}')));
    q.add('big', 200, { ncpus: 4 });
    q.add('small', 200, { ncpus: 1 });
    const t = tally(q.take(100));
    expect(t.small).to.be.within(78, 82);
    expect(t.big).to.be.within(18, 22);
  });

  it('a higher-priority queue goes first whatever the shares; fair share within it', function () {
    const cfg = cfgOf('users:', '  alice: {shares: 100}', 'queues:', '  workq: {}', '  urgent: {priority: 10}', '  low: {priority: -5}', 'default_queue: workq');
    const q = new SimQueue(new FairOrder(() => cfg));
    q.add('alice', 50, { queue: 'low' });
    q.add('alice', 50, { queue: 'workq' });
    q.add('bob', 10, { queue: 'urgent' });
    q.add('carol', 10, { queue: 'urgent' });
    const first = q.take(20);
    expect(first.every((j) => j.queue === 'urgent')).to.equal(true);
    expect(first.slice(0, 2).map((j) => j.user).sort()).to.deep.equal(['bob', 'carol'], 'the two urgent users alternate');
    const next = q.take(50);
    expect(next.every((j) => j.queue === 'workq')).to.equal(true, 'workq (priority 0) before low (-5)');
  });

  it('job priority (-p) orders within one queue priority', function () {
    const q = new SimQueue(new FairOrder(() => cfgOf('')));
    q.add('alice', 5, { priority: 0 });
    q.add('bob', 1, { priority: 100 });
    expect(q.take(1)[0]!.user).to.equal('bob');
  });

  it("a group's shares are split among its members who wait without shares of their own", function () {
    const cfg = cfgOf('groups:', '  physics: {shares: 4}', 'users:', '  dave: {shares: 2}');
    const q = new SimQueue(new FairOrder(() => cfg));
    // Four students of physics share 4 (1 each); dave has 2 of his own. They submit in
    // turns, so each job is queued while the other students have jobs waiting.
    for (let round = 0; round < 30; round++) {
      for (const s of ['s1', 's2', 's3', 's4']) q.add(s, 10, { group: 'physics' });
      q.add('dave', 10, { group: 'other' });
    }
    const t = tally(q.take(600));
    // dave: 2 of 6 shares -> ~200 of 600; each student ~100.
    expect(t.dave).to.be.within(185, 215);
    for (const s of ['s1', 's2', 's3', 's4']) expect(t[s]).to.be.within(90, 110);
  });

  it("one user's 10,000-task array does not starve a user who submits later", function () {
    const q = new SimQueue(new FairOrder(() => cfgOf('')));
    q.add('flood', 10_000);
    q.take(100);
    q.add('late', 5);
    const next = q.take(10);
    expect(tally(next).late).to.equal(5, 'the later user gets every other turn at once');
  });

  it('a returning user is not put behind the backlog queued before they came back', function () {
    const q = new SimQueue(new FairOrder(() => cfgOf('')));
    q.add('busy', 1000);
    q.take(500);
    q.add('back', 20);
    expect(tally(q.take(20)).back).to.equal(20);
    // Once they are level, new jobs of both alternate.
    q.take(1000);
    q.add('busy', 10);
    q.add('back', 10);
    const t = tally(q.take(10));
    expect([t.busy, t.back]).to.deep.equal([5, 5]);
  });

  it('a queue priority set by a reload applies to jobs queued from then on', function () {
    let cfg = cfgOf('queues:', '  workq: {}', '  fast: {}', 'default_queue: workq');
    const q = new SimQueue(new FairOrder(() => cfg));
    q.add('alice', 3, { queue: 'workq' });
    cfg = cfgOf('queues:', '  workq: {}', '  fast: {priority: 5}', 'default_queue: workq');
    q.add('bob', 3, { queue: 'fast' });
    expect(q.take(3).map((j) => j.user)).to.deep.equal(['bob', 'bob', 'bob']);
  });
});
