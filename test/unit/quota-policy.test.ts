import { expect } from 'chai';
import { QuotaError, UsageError } from '../../src/errors.js';
import { parseQuotaText, type QuotaConfig } from '../../src/config/quotas.js';
import {
  UsageTracker,
  admit,
  checkClone,
  checkSubmit,
  trackedJob,
  userLimit,
  type AdmitJob,
  type SubmitRequest,
  type TrackedJob,
} from '../../src/scheduler/policy.js';
import type { JobRecord, JobState } from '../../src/queue/job.js';

const cfgOf = (...l: string[]): QuotaConfig => parseQuotaText(l.join('\n') + '\n', 'quotas.yaml');

function quotaError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(QuotaError);
    return (err as Error).message;
  }
  throw new Error('expected a QuotaError');
}

const job = (over: Partial<TrackedJob> = {}): TrackedJob => ({ user: 'alice', group: 'physics', queue: 'workq', ncpus: 1, memMiB: 1024, ...over });
const req = (over: Partial<SubmitRequest> = {}): SubmitRequest => ({ user: 'alice', group: 'physics', queue: 'workq', ncpus: 1, memMiB: 1024, ...over });

function queue(t: UsageTracker, j: TrackedJob, n: number): void {
  t.onQueued(j, n);
}

function run(t: UsageTracker, j: TrackedJob, n: number): void {
  for (let i = 0; i < n; i++) {
    t.onQueued(j);
    t.onStarted(j);
  }
}

describe('quota policy: checkSubmit', () => {
  it('refuses a submission over the user\'s max_queued, counting running jobs too', () => {
    const cfg = cfgOf('users:', '  alice:', '    max_queued: 10');
    const t = new UsageTracker();
    queue(t, job(), 8);
    run(t, job(), 2);
    expect(quotaError(() => checkSubmit(cfg, t, req()))).to.equal('would exceed max_queued=10 for user alice (has 10 queued or running, submitting 1)');
    expect(() => checkSubmit(cfg, t, req({ user: 'bob' }))).not.to.throw();
  });

  it('counts every subjob of an array', () => {
    const cfg = cfgOf('defaults:', '  max_queued: 100');
    const t = new UsageTracker();
    queue(t, job(), 50);
    expect(() => checkSubmit(cfg, t, req(), 50)).not.to.throw();
    expect(quotaError(() => checkSubmit(cfg, t, req(), 51))).to.equal('would exceed max_queued=100 for user alice (has 50 queued or running, submitting 51)');
  });

  it('a user\'s own value replaces the default user\'s; unlimited lifts it', () => {
    const cfg = cfgOf('defaults:', '  max_queued: 5', 'users:', '  bob:', '    max_queued: 50', '  carol:', '    max_queued: unlimited');
    const t = new UsageTracker();
    for (const user of ['alice', 'bob', 'carol']) queue(t, job({ user }), 5);
    expect(quotaError(() => checkSubmit(cfg, t, req({ user: 'alice' })))).to.equal('would exceed max_queued=5 for user alice (has 5 queued or running, submitting 1)');
    expect(() => checkSubmit(cfg, t, req({ user: 'bob' }))).not.to.throw();
    expect(() => checkSubmit(cfg, t, req({ user: 'carol' }), 1_000_000)).not.to.throw();
    expect(userLimit(cfg, 'carol', 'maxQueued')).to.equal(Infinity);
  });

  it('group, queue, user-in-queue and system max_queued', () => {
    const cfg = cfgOf(
      'groups:',
      '  physics: {max_queued: 4}',
      'queues:',
      '  workq: {max_queued: 6, per_user: {max_queued: 3}}',
      '  other: {}',
      'default_queue: workq',
      'system:',
      '  max_queued: 8',
    );
    const t = new UsageTracker();
    queue(t, job({ user: 'bob' }), 3);
    expect(quotaError(() => checkSubmit(cfg, t, req(), 2))).to.equal('would exceed max_queued=4 for group physics (has 3 queued or running, submitting 2)');
    queue(t, job({ user: 'dan', group: 'chem' }), 3);
    expect(quotaError(() => checkSubmit(cfg, t, req({ user: 'erin', group: 'bio' })))).to.equal(
      'would exceed max_queued=6 for queue workq (has 6 queued or running, submitting 1)',
    );
    expect(() => checkSubmit(cfg, t, req({ user: 'erin', group: 'bio', queue: 'other' }))).not.to.throw();
    queue(t, job({ user: 'erin', group: 'bio', queue: 'other' }), 1);
    expect(() => checkSubmit(cfg, t, req({ user: 'frank', group: 'bio', queue: 'other' }))).not.to.throw();
    expect(quotaError(() => checkSubmit(cfg, t, req({ user: 'frank', group: 'bio', queue: 'other' }), 2))).to.equal(
      'would exceed max_queued=8 for the system (has 7 queued or running, submitting 2)',
    );
  });

  it('per_user inside a queue applies to each user separately', () => {
    const cfg = cfgOf('queues:', '  short:', '    per_user: {max_queued: 2}');
    const t = new UsageTracker();
    queue(t, job({ queue: 'short' }), 2);
    expect(quotaError(() => checkSubmit(cfg, t, req({ queue: 'short' })))).to.equal(
      'would exceed max_queued=2 for user alice in queue short (has 2 queued or running, submitting 1)',
    );
    expect(() => checkSubmit(cfg, t, req({ queue: 'short', user: 'bob' }))).not.to.throw();
  });

  it('per-job ncpus, mem and walltime, naming the entity', () => {
    const cfg = cfgOf(
      'defaults:',
      '  max_job_ncpus: 8',
      'groups:',
      '  physics: {max_job_mem: 32gb}',
      'queues:',
      '  short: {max_job_walltime: 01:00:00}',
    );
    const t = new UsageTracker();
    expect(quotaError(() => checkSubmit(cfg, t, req({ queue: 'short', ncpus: 16 })))).to.equal('ncpus=16 exceeds max_job_ncpus=8 for user alice');
    expect(quotaError(() => checkSubmit(cfg, t, req({ queue: 'short', memMiB: 64 * 1024 })))).to.equal('mem=64gb exceeds max_job_mem=32gb for group physics');
    expect(quotaError(() => checkSubmit(cfg, t, req({ queue: 'short', walltimeSec: 7200 })))).to.equal(
      'walltime=02:00:00 exceeds max_job_walltime=01:00:00 for queue short',
    );
    expect(checkSubmit(cfg, t, req({ queue: 'short', ncpus: 8, memMiB: 32 * 1024, walltimeSec: 3600 }))).to.deep.equal({
      queue: 'short',
      ncpus: 8,
      memMiB: 32 * 1024,
      walltimeSec: 3600,
    });
  });

  it('an unknown memory size (0: the headnode\'s RAM) is not checked against max_job_mem', () => {
    const cfg = cfgOf('defaults:', '  max_job_mem: 1gb');
    expect(checkSubmit(cfg, new UsageTracker(), req({ memMiB: 0 })).memMiB).to.equal(0);
  });

  it('applies queue defaults, and the smallest maximum when no walltime is given at all', () => {
    const cfg = cfgOf(
      'users:',
      '  alice: {max_job_walltime: 02:00:00}',
      'queues:',
      '  workq: {default_walltime: 00:30:00, default_ncpus: 2}',
      '  long: {max_job_walltime: 4h}',
      '  free: {}',
      'default_queue: workq',
    );
    const t = new UsageTracker();
    expect(checkSubmit(cfg, t, { user: 'alice', group: 'g' })).to.deep.equal({ queue: 'workq', ncpus: 2, memMiB: 0, walltimeSec: 1800 });
    expect(checkSubmit(cfg, t, { user: 'alice', group: 'g', queue: 'workq', ncpus: 4, walltimeSec: 60 })).to.deep.equal({
      queue: 'workq',
      ncpus: 4,
      memMiB: 0,
      walltimeSec: 60,
    });
    expect(checkSubmit(cfg, t, { user: 'alice', group: 'g', queue: 'long' }).walltimeSec).to.equal(7200);
    expect(checkSubmit(cfg, t, { user: 'bob', group: 'g', queue: 'long' }).walltimeSec).to.equal(4 * 3600);
    expect(checkSubmit(cfg, t, { user: 'bob', group: 'g', queue: 'free' })).to.deep.equal({ queue: 'free', ncpus: 1, memMiB: 0 });
  });

  it('unknown and disabled queues', () => {
    const cfg = cfgOf('queues:', '  workq: {}', '  short: {enabled: false}', 'default_queue: workq');
    const t = new UsageTracker();
    expect(() => checkSubmit(cfg, t, req({ queue: 'shrot' }))).to.throw(UsageError, 'Unknown queue "shrot"; did you mean "short"?');
    expect(() => checkSubmit(cfg, t, req({ queue: 'zzzzzz' }))).to.throw(UsageError, 'Unknown queue "zzzzzz"; queues: workq, short');
    expect(quotaError(() => checkSubmit(cfg, t, req({ queue: 'short' })))).to.equal('queue short is disabled (enabled: false) and accepts no new jobs');
    expect(checkSubmit(cfg, t, req({ queue: '' })).queue).to.equal('workq');
  });

  it('without queues configured any queue name is accepted', () => {
    const cfg = cfgOf('defaults: {max_queued: 5}');
    expect(checkSubmit(cfg, new UsageTracker(), req({ queue: 'anything' })).queue).to.equal('anything');
    expect(checkSubmit(cfg, new UsageTracker(), req({ queue: undefined })).queue).to.equal('workq');
  });
});

describe('quota policy: admit', () => {
  const a = (over: Partial<AdmitJob> = {}): AdmitJob => ({ user: 'alice', group: 'physics', queue: 'workq', ncpus: 1, memMiB: 1024, ...over });

  it('UserMaxRun with a human tail', () => {
    const cfg = cfgOf('users:', '  alice: {max_running: 4}');
    const t = new UsageTracker();
    run(t, job(), 3);
    expect(admit(cfg, t, a())).to.deep.equal({ ok: true });
    run(t, job(), 1);
    expect(admit(cfg, t, a())).to.deep.equal({ ok: false, code: 'UserMaxRun', reason: 'UserMaxRun: alice has 4 of max_running=4', permanent: false });
    expect(admit(cfg, t, a({ user: 'bob' })).ok).to.equal(true);
    t.onEnded(job());
    expect(admit(cfg, t, a()).ok).to.equal(true);
  });

  it('the default user\'s max_running applies to everybody without their own', () => {
    const cfg = cfgOf('defaults: {max_running: 1}', 'users:', '  bob: {max_running: 3}');
    const t = new UsageTracker();
    run(t, job(), 1);
    run(t, job({ user: 'bob' }), 1);
    expect(admit(cfg, t, a()).ok).to.equal(false);
    expect(admit(cfg, t, a({ user: 'bob' })).ok).to.equal(true);
  });

  it('GroupMaxRun, QueueUserMaxRun, QueueMaxRun, SystemMaxRun', () => {
    const cfg = cfgOf(
      'groups:',
      '  physics: {max_running: 2}',
      'queues:',
      '  workq: {max_running: 3, per_user: {max_running: 1}}',
      '  big: {}',
      'default_queue: workq',
      'system: {max_running: 4}',
    );
    const t = new UsageTracker();
    run(t, job({ user: 'bob' }), 1);
    expect(admit(cfg, t, a()).ok).to.equal(true);
    run(t, job({ user: 'carol' }), 1);
    expect(admit(cfg, t, a())).to.deep.include({ code: 'GroupMaxRun', reason: 'GroupMaxRun: group physics has 2 of max_running=2' });
    expect(admit(cfg, t, a({ user: 'bob', group: 'chem' }))).to.deep.include({
      code: 'QueueUserMaxRun',
      reason: 'QueueUserMaxRun: bob in queue workq has 1 of max_running=1',
    });
    run(t, job({ user: 'dan', group: 'chem' }), 1);
    expect(admit(cfg, t, a({ user: 'erin', group: 'chem' }))).to.deep.include({ code: 'QueueMaxRun', reason: 'QueueMaxRun: queue workq has 3 of max_running=3' });
    run(t, job({ user: 'dan', group: 'chem', queue: 'big' }), 1);
    expect(admit(cfg, t, a({ user: 'erin', group: 'chem', queue: 'big' }))).to.deep.include({
      code: 'SystemMaxRun',
      reason: 'SystemMaxRun: the system has 4 of max_running=4',
    });
  });

  it('cpu and memory totals (UserMaxCpus, GroupMaxMem, QueueMaxCpus, SystemMaxMem)', () => {
    const cfg = cfgOf(
      'users:',
      '  alice: {max_running_ncpus: 16}',
      'groups:',
      '  physics: {max_running_mem: 64gb}',
      'queues:',
      '  workq: {max_running_ncpus: 20}',
      'system: {max_running_mem: 100gb}',
    );
    const t = new UsageTracker();
    run(t, job({ ncpus: 14, memMiB: 10 * 1024 }), 1);
    expect(admit(cfg, t, a({ ncpus: 2 })).ok).to.equal(true);
    expect(admit(cfg, t, a({ ncpus: 4 }))).to.deep.equal({
      ok: false,
      code: 'UserMaxCpus',
      reason: 'UserMaxCpus: alice uses 14 of max_running_ncpus=16 cpus, job asks 4',
      permanent: false,
    });
    run(t, job({ user: 'bob', ncpus: 1, memMiB: 50 * 1024 }), 1);
    expect(admit(cfg, t, a({ user: 'carol', memMiB: 8 * 1024 }))).to.deep.include({
      code: 'GroupMaxMem',
      reason: 'GroupMaxMem: group physics uses 60gb of max_running_mem=64gb, job needs 8gb',
    });
    expect(admit(cfg, t, a({ user: 'dan', group: 'chem', ncpus: 6 }))).to.deep.include({
      code: 'QueueMaxCpus',
      reason: 'QueueMaxCpus: queue workq uses 15 of max_running_ncpus=20 cpus, job asks 6',
    });
    expect(admit(cfg, t, a({ user: 'dan', group: 'chem', memMiB: 41 * 1024 }))).to.deep.include({
      code: 'SystemMaxMem',
      reason: 'SystemMaxMem: the system uses 60gb of max_running_mem=100gb, job needs 41gb',
    });
  });

  it('a job that could never fit is marked permanent', () => {
    const cfg = cfgOf('users:', '  alice: {max_running_ncpus: 4}', '  bob: {max_running: 0}');
    expect(admit(cfg, new UsageTracker(), a({ ncpus: 8 }))).to.deep.include({ ok: false, code: 'UserMaxCpus', permanent: true });
    expect(admit(cfg, new UsageTracker(), a({ user: 'bob' }))).to.deep.include({ ok: false, code: 'UserMaxRun', permanent: true });
  });

  it('a stopped queue keeps its jobs queued', () => {
    const cfg = cfgOf('queues:', '  workq: {started: false}');
    expect(admit(cfg, new UsageTracker(), a())).to.deep.equal({
      ok: false,
      code: 'QueueStopped',
      reason: 'QueueStopped: queue workq is not started (started: false)',
      permanent: false,
    });
  });

  it('no configuration, no limit', () => {
    const t = new UsageTracker();
    run(t, job(), 10_000);
    expect(admit(cfgOf(''), t, a({ ncpus: 1000, memMiB: 1 << 30 }))).to.deep.equal({ ok: true });
  });
});

describe('quota policy: checkClone', () => {
  it('max_clones per user (with defaults), group and system', () => {
    const cfg = cfgOf('defaults: {max_clones: 2}', 'users:', '  guest: {max_clones: 0}', 'groups:', '  physics: {max_clones: 3}', 'system: {max_clones: 4}');
    const t = new UsageTracker();
    expect(quotaError(() => checkClone(cfg, t, { user: 'guest', group: 'x' }))).to.equal('would exceed max_clones=0 for user guest (0 live clones)');
    t.onCloneCreated('alice', 'physics');
    t.onCloneCreated('alice', 'physics');
    expect(quotaError(() => checkClone(cfg, t, { user: 'alice', group: 'physics' }))).to.equal('would exceed max_clones=2 for user alice (2 live clones)');
    t.onCloneCreated('bob', 'physics');
    expect(quotaError(() => checkClone(cfg, t, { user: 'carol', group: 'physics' }))).to.equal('would exceed max_clones=3 for group physics (3 live clones)');
    t.onCloneCreated('dan', 'chem');
    expect(quotaError(() => checkClone(cfg, t, { user: 'erin', group: 'chem' }))).to.equal('would exceed max_clones=4 for the system (4 live clones)');
    t.onCloneDestroyed('dan', 'chem');
    expect(() => checkClone(cfg, t, { user: 'erin', group: 'chem' })).not.to.throw();
  });
});

describe('quota policy: UsageTracker', () => {
  it('moves counts through queued, running and ended', () => {
    const t = new UsageTracker();
    const j = job({ ncpus: 4, memMiB: 2048 });
    t.onQueued(j, 3);
    t.onStarted(j);
    expect(t.users.get('alice')).to.deep.equal({ queued: 2, running: 1, runningNcpus: 4, runningMemMiB: 2048, clones: 0 });
    expect(t.groups.get('physics')).to.deep.equal(t.users.get('alice'));
    expect(t.queues.get('workq')).to.deep.equal(t.users.get('alice'));
    expect(t.queueUsers.get('workq')?.get('alice')).to.deep.equal(t.users.get('alice'));
    expect(t.total).to.deep.equal(t.users.get('alice'));
    t.onRequeued(j);
    expect(t.users.get('alice')).to.include({ queued: 3, running: 0, runningNcpus: 0 });
    t.onStarted(j);
    t.onEnded(j);
    t.onDequeued(j, 2);
    expect(t.users.size).to.equal(0);
    expect(t.queueUsers.size).to.equal(0);
    expect(t.total).to.deep.equal({ queued: 0, running: 0, runningNcpus: 0, runningMemMiB: 0, clones: 0 });
  });

  it('never goes below zero when an event is reported twice', () => {
    const t = new UsageTracker();
    t.onEnded(job());
    t.onDequeued(job(), 5);
    expect(t.total.running).to.equal(0);
    expect(t.users.size).to.equal(0);
  });

  it('snapshot() is a copy', () => {
    const t = new UsageTracker();
    t.onQueued(job());
    const s = t.snapshot();
    t.onQueued(job(), 5);
    expect(s.users.get('alice')?.queued).to.equal(1);
    expect(s.queueUsers.get('workq')?.get('alice')?.queued).to.equal(1);
    expect(t.users.get('alice')?.queued).to.equal(6);
  });

  it('fromJobs() rebuilds usage from job records', () => {
    const rec = (state: JobState, user: string): Pick<JobRecord, 'spec' | 'state'> => ({
      state,
      spec: { user, group: 'g', queue: 'workq', resources: { ncpus: 2, memMiB: 512 } } as JobRecord['spec'],
    });
    const t = UsageTracker.fromJobs([rec('Q', 'a'), rec('H', 'a'), rec('W', 'a'), rec('R', 'a'), rec('E', 'b'), rec('F', 'b')]);
    expect(t.users.get('a')).to.deep.equal({ queued: 3, running: 1, runningNcpus: 2, runningMemMiB: 512, clones: 0 });
    expect(t.users.get('b')).to.deep.equal({ queued: 0, running: 1, runningNcpus: 2, runningMemMiB: 512, clones: 0 });
    expect(trackedJob(rec('Q', 'a'))).to.deep.equal({ user: 'a', group: 'g', queue: 'workq', ncpus: 2, memMiB: 512 });
  });
});

describe('quota policy: many users', () => {
  it('1,000 users x 20 jobs: limits hold at every step and the counts stay exact', () => {
    const cfg = cfgOf(
      'defaults: {max_queued: 20, max_running: 3, max_running_ncpus: 4}',
      'groups:',
      '  g0: {max_running: 50}',
      'system: {max_running: 1500}',
    );
    const t = new UsageTracker();
    const users = Array.from({ length: 1000 }, (_, i) => ({ user: `u${i}`, group: `g${i % 10}` }));
    for (const u of users) {
      for (let k = 0; k < 20; k++) checkSubmit(cfg, t, { ...u, queue: 'workq', ncpus: 1 + (k % 2) });
      t.onQueued({ ...u, queue: 'workq', ncpus: 1, memMiB: 0 }, 20);
      expect(() => checkSubmit(cfg, t, { ...u, queue: 'workq' })).to.throw(QuotaError, 'max_queued=20');
    }
    expect(t.total.queued).to.equal(20_000);
    // Dispatch rounds: every user tries to start jobs of 1 or 2 cpus.
    const running: TrackedJob[] = [];
    let decisions = 0;
    for (let round = 0; round < 4; round++) {
      for (const u of users) {
        const j: TrackedJob = { ...u, queue: 'workq', ncpus: 1 + ((round + Number(u.user.slice(1))) % 2), memMiB: 0 };
        decisions++;
        if (admit(cfg, t, j).ok) {
          t.onStarted(j);
          running.push(j);
        }
      }
    }
    expect(decisions).to.equal(4000);
    for (const [name, c] of t.users) {
      expect(c.running, name).to.be.at.most(3);
      expect(c.runningNcpus, name).to.be.at.most(4);
    }
    expect(t.groups.get('g0')?.running).to.equal(50);
    expect(t.total.running).to.equal(running.length).and.to.be.at.most(1500);
    expect(t.total.queued + t.total.running).to.equal(20_000);
    for (const j of running) t.onEnded(j);
    expect(t.total.running).to.equal(0);
    expect(t.total.runningNcpus).to.equal(0);
  });
});
