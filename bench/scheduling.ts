/**
 * Scheduling benchmark (PBS parity figures), last line one JSON object:
 *   array10kSubmitMs        one 10,000-task array through Scheduler.submit (one snapshot)
 *   qstat100kMs             gcqstat's work (list + PBS table) with 100,000 jobs in Redis
 *   qstat100kTasksMs        the same with -t (every task a line)
 *   decisionsPerSec         admission decisions (quota admit + fair-share tag + usage update), 1,000 users
 *   dispatchPerSecQuotas    jobs/s run end to end by the dispatcher under quotas and fair share
 *                           (test-double driver, instant exec, 1,000 users)
 * Run: npm run build && node dist/bench/scheduling.js
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseQuotaText } from '../src/config/quotas.js';
import { FakeDriver } from '../src/drivers/fake/fake-driver.js';
import { formatQstatTable } from '../src/pbs/qstat-format.js';
import type { JobRecord, JobSpec } from '../src/queue/job.js';
import { ADMIN } from '../src/scheduler/actor.js';
import { FairOrder } from '../src/scheduler/fair-order.js';
import { admit, trackedJob, UsageTracker } from '../src/scheduler/policy.js';
import { Scheduler } from '../src/scheduler/scheduler.js';
import { startBenchRedis } from './bench-redis.js';

const spec = (user: string): JobSpec => ({
  argv: ['true'],
  name: 'bench',
  cwd: '/tmp',
  env: {},
  user,
  group: `g${user.length % 7}`,
  headnode: 'hn1',
  queue: '',
  priority: 0,
  join: 'n',
  rerunnable: true,
  resources: { ncpus: 1, memMiB: 0 },
  submitHost: 'bench',
});
const quotaText = 'defaults:\n  max_running: 4\n  max_queued: 100000\n  shares: 1\nsystem:\n  max_queued: 1000000\n';

const dir = mkdtempSync(join(tmpdir(), 'copper-bench-'));
const server = await startBenchRedis(dir);
const driver = new FakeDriver({ deliverRoot: join(dir, 'out'), headnodes: new Set(['hn1']), instant: true });
const quotas = parseQuotaText(quotaText, 'bench.yaml');
const base = {
  ...server.base({ prefix: 'copper', serverName: 'b', driver, stateDir: dir }),
  capacity: { ncpus: 1e6, memMiB: 1e9 },
  quotas: () => quotas,
};
let result: Record<string, number> = {};
try {
  const sched = new Scheduler({ ...base, dispatch: false });
  await sched.start();
  const indices = Array.from({ length: 10_000 }, (_, i) => i + 1);
  let t = performance.now();
  await sched.submit([spec('alice')], { array: { indices } });
  const array10kSubmitMs = performance.now() - t;
  console.log(`10,000-task array accepted in ${array10kSubmitMs.toFixed(0)} ms`);
  for (let k = 0; k < 9; k++) await sched.submit([spec(`u${k}`)], { array: { indices } });

  t = performance.now();
  const jobs = await sched.list(ADMIN);
  formatQstatTable(jobs, { server: 'b' });
  const qstat100kMs = performance.now() - t;
  t = performance.now();
  const all = await sched.list(ADMIN, { tasks: true });
  const text = formatQstatTable(all, { server: 'b' });
  const qstat100kTasksMs = performance.now() - t;
  console.log(
    `gcqstat with ${all.length} jobs in the system: ${qstat100kMs.toFixed(0)} ms; gcqstat -t (${text.split('\n').length} lines): ${qstat100kTasksMs.toFixed(0)} ms`,
  );
  await sched.close();
  await server.redis.flushdb();

  // Pure decisions: 1,000 users x 50 waiting jobs each, under quotas and fair share.
  const usage = new UsageTracker();
  const fair = new FairOrder(() => quotas);
  const waiting: JobRecord[] = [];
  for (let u = 0; u < 1000; u++) {
    for (let k = 0; k < 50; k++) {
      const r = { id: `${u}.${k}`, seq: 0, spec: spec(`user${u}`), state: 'Q' as const, queuedAt: 0, runCount: 0 };
      usage.onQueued(trackedJob(r));
      waiting.push(r);
    }
  }
  t = performance.now();
  let admitted = 0;
  for (const r of waiting) {
    const tag = fair.tag({ user: r.spec.user, group: r.spec.group, queue: r.spec.queue, priority: r.spec.priority, ncpus: r.spec.resources.ncpus });
    const a = admit(quotas, usage, trackedJob(r));
    if (a.ok) {
      usage.onStarted(trackedJob(r));
      fair.dispatched(tag.vstart);
      admitted++;
    }
  }
  const decisionsPerSec = waiting.length / ((performance.now() - t) / 1000);
  console.log(`${waiting.length} admission decisions (${admitted} admitted under max_running=4): ${decisionsPerSec.toFixed(0)}/s`);

  // End to end: the dispatcher under the same quotas with 1,000 users.
  const sub = new Scheduler({ ...base, dispatch: false });
  await sub.start();
  for (let u = 0; u < 1000; u++) await sub.submit([spec(`user${u}`), spec(`user${u}`), spec(`user${u}`)]);
  await sub.close();
  const run = new Scheduler({ ...base, concurrency: 64 });
  t = performance.now();
  await run.start();
  for (;;) {
    const c = await run.queue.queue.getJobCounts('wait', 'active', 'delayed', 'prioritized');
    if (Object.values(c).every((n) => n === 0)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const dispatchPerSecQuotas = 3000 / ((performance.now() - t) / 1000);
  console.log(`dispatcher under quotas and fair share, 1,000 users: ${dispatchPerSecQuotas.toFixed(0)} jobs/s`);
  await run.close();
  result = {
    array10kSubmitMs: Math.round(array10kSubmitMs),
    qstat100kMs: Math.round(qstat100kMs),
    qstat100kTasksMs: Math.round(qstat100kTasksMs),
    decisionsPerSec: Math.round(decisionsPerSec),
    dispatchPerSecQuotas: Math.round(dispatchPerSecQuotas),
  };
} finally {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(0);
