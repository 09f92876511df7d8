/**
 * Queue benchmark: prints figures, the last line one JSON object.
 *   submitApiBulkPerSec   jobs/s through Scheduler.submit in batches of 1,000 (one snapshot per batch)
 *   submitApiSeqPerSec    jobs/s through Scheduler.submit one job per call
 *   submitCliPerSec       jobs/s through `gcqsub` processes run one after another
 *   gcqsubColdStartMs     median wall time of one `gcqsub` process (node start + submit)
 *   dispatchPerSec        jobs/s taken from BullMQ, cloned, run and finished (test-double driver, instant exec)
 * Run: npm run bench  (or node dist/bench/queue.js)
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeDriver } from '../src/drivers/fake/fake-driver.js';
import type { JobSpec } from '../src/queue/job.js';
import { ADMIN } from '../src/scheduler/actor.js';
import { Scheduler } from '../src/scheduler/scheduler.js';
import { startBenchRedis } from './bench-redis.js';
import { BIN, GcdProcess } from '../test/helpers/gcd-process.js';

const spec = (i: number): JobSpec => ({
  argv: ['true', String(i)],
  name: 'bench',
  cwd: '/tmp',
  env: {},
  user: 'u' + (i % 10),
  group: 'g',
  headnode: 'hn1',
  queue: 'workq',
  priority: 0,
  join: 'n',
  rerunnable: true,
  resources: { ncpus: 1, memMiB: 0 },
  submitHost: 'bench',
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function apiFigures(): Promise<{ bulk: number; seq: number; dispatch: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'copper-bench-'));
  const server = await startBenchRedis(dir);
  const driver = new FakeDriver({ deliverRoot: join(dir, 'out'), headnodes: new Set(['hn1']), instant: true });
  const base = {
    ...server.base({ prefix: 'copper', serverName: 'b', driver, stateDir: dir }),
    capacity: { ncpus: 100000, memMiB: 1e9 },
  };
  const submitOnly = new Scheduler({ ...base, dispatch: false });
  await submitOnly.start();

  const N = 10_000;
  let t = performance.now();
  for (let i = 0; i < N; i += 1000) await submitOnly.submit(Array.from({ length: 1000 }, (_, k) => spec(i + k)));
  const bulk = N / ((performance.now() - t) / 1000);

  const M = 1000;
  t = performance.now();
  for (let i = 0; i < M; i++) await submitOnly.submit([spec(i)]);
  const seq = M / ((performance.now() - t) / 1000);
  await submitOnly.close();

  // Dispatch everything queued above (N + M jobs) with the instant test double.
  const total = N + M;
  const runner = new Scheduler({ ...base, concurrency: 64, killDelayMs: 100 });
  t = performance.now();
  await runner.start();
  for (;;) {
    const c = await runner.queue.queue.getJobCounts('wait', 'active', 'delayed', 'prioritized');
    if (Object.values(c).every((n) => n === 0)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const unfinished = (await runner.list(ADMIN)).length;
  if (unfinished) throw new Error(`${unfinished} jobs did not finish`);
  const dispatch = total / ((performance.now() - t) / 1000);
  await runner.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
  return { bulk, seq, dispatch };
}

async function cliFigures(): Promise<{ perSec: number; coldMs: number }> {
  const g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:users', GC_LOG_LEVEL: 'info' });
  try {
    return await timeCli(g);
  } finally {
    await g.cleanup();
  }
}

async function timeCli(g: GcdProcess): Promise<{ perSec: number; coldMs: number }> {
  await g.start();
  // The daemon must not run them while we time submissions: hold them (-h).
  const times: number[] = [];
  const K = 40;
  const t = performance.now();
  for (let i = 0; i < K; i++) {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [join(BIN, 'gcqsub.js'), '--headnode', 'hn1', '-h', '--', 'true'], { env: g.env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    times.push(performance.now() - t0);
  }
  const perSec = K / ((performance.now() - t) / 1000);
  return { perSec, coldMs: median(times) };
}

const api = await apiFigures();
console.log(`submissions through the API in bulk: ${api.bulk.toFixed(0)}/s; one at a time: ${api.seq.toFixed(0)}/s`);
console.log(`dispatches with the test double: ${api.dispatch.toFixed(0)}/s`);
const cli = await cliFigures();
console.log(`gcqsub processes: ${cli.perSec.toFixed(1)}/s, cold start median ${cli.coldMs.toFixed(0)} ms`);
console.log(
  JSON.stringify({
    submitApiBulkPerSec: Math.round(api.bulk),
    submitApiSeqPerSec: Math.round(api.seq),
    dispatchPerSec: Math.round(api.dispatch),
    submitCliPerSec: Number(cli.perSec.toFixed(1)),
    gcqsubColdStartMs: Math.round(cli.coldMs),
  }),
);
process.exit(0);
