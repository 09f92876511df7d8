import { expect } from 'chai';
import { parseQuotaText, type QuotaConfig } from '../../src/config/quotas.js';
import { FairShare, type Candidate } from '../../src/scheduler/fair-share.js';
import { UsageTracker, admit } from '../../src/scheduler/policy.js';

const cfgOf = (...l: string[]): QuotaConfig => parseQuotaText(l.join('\n') + '\n', 'quotas.yaml');
const EMPTY = new UsageTracker();

let clock = 0;
function jobs(user: string, n: number, over: Partial<Candidate> = {}): Candidate[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${user}.${i}`, user, group: 'g', priority: 0, queuedAt: clock++, ...over, ...(over.id ? { id: `${over.id}.${i}` } : {}) }));
}

function tally(ids: Iterable<string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const id of ids) {
    const user = id.split('.')[0] as string;
    out[user] = (out[user] ?? 0) + 1;
  }
  return out;
}

function drain(fs: FairShare, n: number, usage = EMPTY, accept?: (c: Candidate) => boolean): Candidate[] {
  const out: Candidate[] = [];
  for (let i = 0; i < n; i++) {
    const c = fs.next(usage, accept);
    if (!c) break;
    out.push(c);
  }
  return out;
}

describe('fair share: proportions', () => {
  const cfg = cfgOf('users:', '  alice: {shares: 3}', '  bob: {shares: 1}');

  it('shares 3:1 over 400 picks give 300:100 (±2%) with next()', () => {
    const fs = new FairShare(cfg);
    for (const c of [...jobs('alice', 1000), ...jobs('bob', 1000)]) fs.add(c);
    const t = tally(drain(fs, 400).map((c) => c.id));
    expect(t.alice).to.be.within(294, 306);
    expect(t.bob).to.be.within(94, 106);
    expect(fs.size).to.equal(1600);
  });

  it('shares 3:1 over 400 picks with pick(), which leaves the live state alone', () => {
    const fs = new FairShare(cfg);
    const order = fs.pick([...jobs('bob', 1000), ...jobs('alice', 1000)], EMPTY);
    expect(order).to.have.length(2000);
    const t = tally(order.slice(0, 400));
    expect(t.alice).to.be.within(294, 306);
    expect(t.bob).to.be.within(94, 106);
    expect(fs.size).to.equal(0);
  });

  it('keeps the 3:1 proportion of running cpus when jobs are started and tracked', () => {
    const fs = new FairShare(cfg);
    const usage = new UsageTracker();
    for (const c of [...jobs('alice', 500), ...jobs('bob', 500)]) {
      fs.add(c);
      usage.onQueued({ user: c.user, group: c.group, queue: 'workq', ncpus: 1, memMiB: 0 });
    }
    for (let i = 0; i < 400; i++) {
      const c = fs.next(usage) as Candidate;
      usage.onStarted({ user: c.user, group: c.group, queue: 'workq', ncpus: 1, memMiB: 0 });
    }
    expect(usage.users.get('alice')?.running).to.be.within(294, 306);
    expect(usage.users.get('bob')?.running).to.be.within(94, 106);
  });

  it('cpus count, not jobs: a user of 4-cpu jobs gets a quarter of the turns', () => {
    const fs = new FairShare(cfgOf(''));
    for (const c of [...jobs('wide', 200, { ncpus: 4 }), ...jobs('narrow', 200)]) fs.add(c);
    const t = tally(drain(fs, 100).map((c) => c.id));
    expect(t.wide).to.be.within(19, 21);
    expect(t.narrow).to.be.within(79, 81);
  });

  it('default share is 1, and defaults.shares changes it', () => {
    const fs = new FairShare(cfgOf('defaults: {shares: 2}', 'users:', '  alice: {shares: 6}'));
    for (const c of [...jobs('alice', 400), ...jobs('bob', 400)]) fs.add(c);
    const t = tally(drain(fs, 400).map((c) => c.id));
    expect(t.alice).to.be.within(294, 306);
    expect(fs.shareOf('carol', 'x', 1)).to.equal(2);
    expect(new FairShare(cfgOf('')).shareOf('carol', 'x', 1)).to.equal(1);
  });

  it('a group\'s shares are split among its waiting members without shares of their own', () => {
    const cfg2 = cfgOf('groups:', '  physics: {shares: 4}', 'users:', '  carol: {shares: 2}');
    const fs = new FairShare(cfg2);
    const all = [
      ...jobs('ann', 300, { group: 'physics' }),
      ...jobs('ben', 300, { group: 'physics' }),
      ...jobs('carol', 300, { group: 'physics' }),
      ...jobs('dave', 300, { group: 'chem' }),
    ];
    for (const c of all) fs.add(c);
    // ann 4/2=2, ben 2, carol 2 (own), dave 1: turns 2:2:2:1.
    const t = tally(drain(fs, 700).map((c) => c.id));
    expect(t.ann).to.be.within(196, 204);
    expect(t.ben).to.be.within(196, 204);
    expect(t.carol).to.be.within(196, 204);
    expect(t.dave).to.be.within(98, 102);
  });
});

describe('fair share: starvation and history', () => {
  it('one user\'s 10,000-task array does not starve a later user', () => {
    const fs = new FairShare(cfgOf(''));
    for (const c of jobs('alice', 10_000)) fs.add(c);
    drain(fs, 50);
    for (const c of jobs('bob', 10)) fs.add(c);
    const next20 = tally(drain(fs, 20).map((c) => c.id));
    expect(next20.bob).to.equal(10);
    expect(next20.alice).to.equal(10);
  });

  it('idle time earns no credit: a returning user alternates instead of taking every turn', () => {
    const fs = new FairShare(cfgOf(''));
    for (const c of jobs('alice', 500)) fs.add(c);
    for (const c of jobs('bob', 5)) fs.add(c);
    drain(fs, 10); // bob's 5 are gone, alice had 5
    drain(fs, 100); // alice alone for a while
    for (const c of jobs('bob', 50, { id: 'bob2' })) fs.add(c);
    const t = tally(drain(fs, 40).map((c) => c.id));
    expect(t.bob2).to.equal(20);
    expect(t.alice).to.equal(20);
  });

  it('running cpus come first: a user holding many cpus waits for the others to catch up', () => {
    const usage = new UsageTracker();
    for (let i = 0; i < 10; i++) {
      usage.onQueued({ user: 'alice', group: 'g', queue: 'q', ncpus: 1, memMiB: 0 });
      usage.onStarted({ user: 'alice', group: 'g', queue: 'q', ncpus: 1, memMiB: 0 });
    }
    const fs = new FairShare(cfgOf(''));
    const order = fs.pick([...jobs('alice', 20), ...jobs('bob', 20)], usage);
    expect(tally(order.slice(0, 10))).to.deep.equal({ bob: 10 });
    const t = tally(order.slice(10, 30));
    expect(t.alice).to.equal(10);
    expect(t.bob).to.equal(10);
  });
});

describe('fair share: ordering', () => {
  it('within one user: higher priority first, then earlier submission, then order of add()', () => {
    const fs = new FairShare(cfgOf(''));
    fs.add({ id: 'a', user: 'u', group: 'g', priority: 0, queuedAt: 5 });
    fs.add({ id: 'b', user: 'u', group: 'g', priority: 10, queuedAt: 9 });
    fs.add({ id: 'c', user: 'u', group: 'g', priority: 0, queuedAt: 1 });
    fs.add({ id: 'd', user: 'u', group: 'g', priority: 0, queuedAt: 5 });
    fs.add({ id: 'e', user: 'u', group: 'g', priority: -5, queuedAt: 0 });
    expect(drain(fs, 10).map((c) => c.id)).to.deep.equal(['b', 'c', 'a', 'd', 'e']);
  });

  it('a higher-priority queue goes first, fair share within it', () => {
    const cfg = cfgOf('queues:', '  express: {priority: 100}', '  workq: {}', '  low: {priority: -10}', 'default_queue: workq');
    const fs = new FairShare(cfg);
    for (const c of jobs('alice', 3, { queue: 'low' })) fs.add(c);
    for (const c of jobs('bob', 3, { queue: 'workq', id: 'bobw' })) fs.add(c);
    for (const c of jobs('bob', 2, { queue: 'express', id: 'bobx' })) fs.add(c);
    for (const c of jobs('carol', 2, { queue: 'express' })) fs.add(c);
    const ids = drain(fs, 20).map((c) => c.id);
    expect(ids.slice(0, 4).sort()).to.deep.equal(['bobx.0', 'bobx.1', 'carol.0', 'carol.1']);
    expect(ids.slice(4, 7)).to.deep.equal(['bobw.0', 'bobw.1', 'bobw.2']);
    expect(ids.slice(7)).to.deep.equal(['alice.0', 'alice.1', 'alice.2']);
  });

  it('follows queue priorities changed by a reload', () => {
    let cfg = cfgOf('queues:', '  a: {priority: 1}', '  b: {priority: 2}', 'default_queue: a');
    const fs = new FairShare(() => cfg);
    fs.add({ id: 'x', user: 'u', group: 'g', priority: 0, queuedAt: 0, queue: 'a' });
    fs.add({ id: 'y', user: 'v', group: 'g', priority: 0, queuedAt: 1, queue: 'b' });
    cfg = cfgOf('queues:', '  a: {priority: 3}', '  b: {priority: 2}', 'default_queue: a');
    expect(fs.next(EMPTY)?.id).to.equal('x');
    expect(fs.next(EMPTY)?.id).to.equal('y');
    expect(fs.next(EMPTY)).to.equal(undefined);
  });

  it('remove() drops a waiting job; add() of a known id replaces it', () => {
    const fs = new FairShare(cfgOf(''));
    for (const c of jobs('alice', 3)) fs.add(c);
    expect(fs.remove('alice.1')).to.equal(true);
    expect(fs.remove('alice.1')).to.equal(false);
    fs.add({ id: 'alice.2', user: 'alice', group: 'g', priority: 50, queuedAt: 99 });
    expect(fs.size).to.equal(2);
    expect(drain(fs, 5).map((c) => c.id)).to.deep.equal(['alice.2', 'alice.0']);
    expect(fs.has('alice.0')).to.equal(false);
  });

  it('a user whose first job is refused is skipped; lower tiers get the turn when the top is blocked', () => {
    const cfg = cfgOf('users:', '  alice: {max_running: 1}', 'queues:', '  hi: {priority: 5}', '  lo: {}', 'default_queue: lo');
    const fs = new FairShare(cfg);
    const usage = new UsageTracker();
    const add = (c: Candidate): void => {
      fs.add(c);
      usage.onQueued({ user: c.user, group: c.group, queue: c.queue as string, ncpus: 1, memMiB: 0 });
    };
    for (const c of jobs('alice', 3, { queue: 'hi' })) add(c);
    for (const c of jobs('bob', 2, { queue: 'lo' })) add(c);
    const accept = (c: Candidate): boolean => admit(cfg, usage, { user: c.user, group: c.group, queue: c.queue as string, ncpus: 1, memMiB: 0 }).ok;
    const started: string[] = [];
    for (let c = fs.next(usage, accept); c; c = fs.next(usage, accept)) {
      started.push(c.id);
      usage.onStarted({ user: c.user, group: c.group, queue: c.queue as string, ncpus: 1, memMiB: 0 });
    }
    expect(started).to.deep.equal(['alice.0', 'bob.0', 'bob.1']);
    expect(fs.size).to.equal(2);
  });
});

describe('fair share: many users', () => {
  it('1,000 users x 20 jobs: every user gets one turn before anyone gets a second', () => {
    const fs = new FairShare(cfgOf(''));
    const users = Array.from({ length: 1000 }, (_, i) => `u${String(i).padStart(4, '0')}`);
    // u0000 submits everything first, the others after: arrival order must not matter.
    for (const u of users) for (const c of jobs(u, 20)) fs.add(c);
    expect(fs.size).to.equal(20_000);
    const usage = new UsageTracker();
    for (let round = 0; round < 3; round++) {
      const picked = drain(fs, 1000, usage);
      const t = tally(picked.map((c) => c.id));
      expect(Object.keys(t)).to.have.length(1000);
      expect(Object.values(t).every((n) => n === 1)).to.equal(true);
    }
    expect(fs.size).to.equal(17_000);
  });
});
