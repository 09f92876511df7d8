import type { JobRecord, JobSpec, JobState } from '../../src/queue/job.js';

/** A job spec for unit tests of the scheduler (test-double driver, headnode hn1). */
export function testSpec(over: Partial<JobSpec> = {}): JobSpec {
  return {
    argv: ['sh', '-c', 'echo hello; echo oops >&2'],
    name: 'STDIN',
    cwd: '/tmp',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    user: 'alice',
    group: 'users',
    headnode: 'hn1',
    queue: 'workq',
    priority: 0,
    join: 'n',
    rerunnable: true,
    resources: { ncpus: 1, memMiB: 0 },
    submitHost: 'hn1',
    ...over,
  };
}

export function testRecord(seq: number, state: JobState, over: Partial<JobRecord> = {}): JobRecord {
  return { id: `${seq}.srv`, seq, spec: testSpec(), state, queuedAt: Date.now(), runCount: 0, ...over };
}
