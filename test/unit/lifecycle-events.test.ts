import { expect } from 'chai';
import { JobLifecycle } from '../../src/lifecycle/from-job-events.js';
import type { JobTransition, LifecycleListener } from '../../src/lifecycle/listener.js';
import type { EndReason, JobRecord, JobState } from '../../src/queue/job.js';
import { JobEvents } from '../../src/queue/job-events.js';
import type { JobEvent } from '../../src/queue/job-states.js';

const spec: JobRecord['spec'] = {
  argv: ['x'], name: 'j', cwd: '/root', env: {}, user: 'alice', group: 'physics', headnode: 'hn', queue: 'workq', priority: 0,
  join: 'n', rerunnable: true, resources: { ncpus: 1, memMiB: 0 }, submitHost: 'hn',
};

function job(id: string, state: JobState, extra: Partial<JobRecord> = {}): JobRecord {
  return { id, seq: Number.parseInt(id, 10), spec, state, queuedAt: 1000, runCount: 1, ...extra };
}

/** A listener that is slow on its first line, to show the order is kept anyway. */
class Recorder implements LifecycleListener {
  readonly name = 'recorder';
  readonly seen: JobTransition[] = [];
  async onTransition(t: JobTransition): Promise<void> {
    if (this.seen.length === 0) await new Promise((r) => setTimeout(r, 30));
    this.seen.push(t);
  }
}

describe('job lifecycle from the state-change stream (unit)', function () {
  it('turns state changes into PBS events, telling E, D and A apart by endReason, in order', async function () {
    const events = new JobEvents();
    const life = new JobLifecycle();
    const rec = new Recorder();
    life.add(rec);
    life.attach(events);
    const change = (id: string, event: JobEvent, from: JobState, to: JobState, extra: Partial<JobRecord> = {}): void =>
      events.emit({ jobId: id, event, from, to, record: job(id, to, extra) });
    const fin = (id: string, endReason: EndReason): void => change(id, 'finish', 'E', 'F', { startedAt: 2000, endedAt: 3000, endReason });

    change('1.s', 'run', 'Q', 'R');
    change('1.s', 'hold', 'Q', 'H'); // not an accounting event
    fin('1.s', 'exit');
    fin('2.s', 'walltime');
    fin('3.s', 'deleted');
    fin('4.s', 'lost');
    fin('5.s', 'failed');
    change('6.s', 'delete', 'Q', 'F', { endedAt: 3000 });
    change('7.s', 'requeue', 'R', 'Q');
    await life.close();

    expect(rec.seen.map((t) => `${t.jobId} ${t.event}`)).to.deep.equal([
      '1.s started', '1.s ended', '2.s ended', '3.s deleted', '4.s aborted', '5.s aborted', '6.s deleted', '7.s rerun',
    ]);
    // The start record carries its start time (the runner writes it just after the CAS).
    expect(rec.seen[0].record.startedAt).to.be.a('number');
    expect(rec.seen[1].at).to.equal(3000);
    // After close, nothing more is heard.
    change('8.s', 'run', 'Q', 'R');
    await life.idle();
    expect(rec.seen).to.have.length(8);
  });

  it('queues one Q per job (the array, not its tasks) and one snapshot pause per snapshot', async function () {
    const life = new JobLifecycle();
    const rec = new Recorder();
    life.add(rec);
    life.submitted(
      [job('1[].s', 'Q', { array: { indices: [1, 2] } }), job('1[1].s', 'Q', { arrayParent: '1[].s' }), job('1[2].s', 'Q', { arrayParent: '1[].s' })],
      [{ id: 'hn.a', headnode: 'hn', pauseMs: 42, createdAt: 0 }],
    );
    life.submitted([job('2.s', 'Q'), job('3.s', 'Q')], [{ id: 'hn.b', headnode: 'hn', pauseMs: 7, createdAt: 0 }]);
    await life.idle();
    expect(rec.seen.map((t) => [t.jobId, t.event, t.timings?.snapshotPauseMs])).to.deep.equal([
      ['1[].s', 'queued', 42],
      ['2.s', 'queued', 7],
      ['3.s', 'queued', undefined],
    ]);
  });
});
