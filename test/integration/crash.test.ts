import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { CRASH_POINTS } from '../../src/crash-point.js';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * The crash suite (issue 13): gcd kills itself (SIGKILL, GC_TEST_CRASH_AT) at each named step
 * of submit, dispatch, run, deliver and finish; a new gcd on the same state folder and Redis
 * must end every job exactly once and leave nothing behind: no clone process, spool file,
 * snapshot or Redis key beyond what a run without the crash leaves, and held or deleted jobs
 * stay so. Test-double driver (commands run as host processes) and the real embedded Redis.
 */

interface JsonJobs {
  Jobs: Record<string, { job_state: string; Exit_status?: number; comment?: string }>;
}

const BULL_HOUSEKEEPING = /:bull:jobs:(events|meta|id|stalled-check|marker|pc|limiter|stalled)$/;

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_SERVER_NAME: 'srv', GC_LOCK_MS: '2000', GC_KILL_DELAY_MS: '300', ...extra };
}

function jobs(g: GcdProcess): JsonJobs['Jobs'] {
  const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json']);
  if (r.status !== 0) throw new Error(`gcqstat: ${r.stderr}`);
  return (JSON.parse(r.stdout) as JsonJobs).Jobs;
}

async function redisOf(stateDir: string): Promise<Redis> {
  const password = readFileSync(join(stateDir, 'redis', 'password'), 'utf8').trim();
  const c = new Redis({ path: join(stateDir, 'redis', 'redis.sock'), password, lazyConnect: true, maxRetriesPerRequest: 1 });
  await c.connect();
  return c;
}

/**
 * Copper's keys, job numbers made N, BullMQ's own housekeeping left out; with each usage
 * hash's counts and each BullMQ list's and set's length.
 */
async function keyState(stateDir: string): Promise<string[]> {
  const c = await redisOf(stateDir);
  try {
    const out: string[] = [];
    for (const k of (await c.keys('copper:*')).filter((k) => !BULL_HOUSEKEEPING.test(k))) {
      const type = await c.type(k);
      let v = '';
      if (k.startsWith('copper:usage:') && type === 'hash') v = JSON.stringify(await c.hgetall(k));
      if (type === 'list' || (type === 'zset' && !/^copper:jobs/.test(k))) v = `len=${type === 'list' ? await c.llen(k) : await c.zcard(k)}`;
      // The fair-share clock (one key per user or group, dropped when nothing waits) is checked apart.
      if (k.includes(':fair:')) continue;
      out.push(`${k.replace(/\d+/g, 'N')} ${v}`);
    }
    return [...new Set(out)].sort();
  } finally {
    c.disconnect();
  }
}

function accountingEnds(stateDir: string, id: string): number {
  const dir = join(stateDir, 'accounting');
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const f of readdirSync(dir)) for (const l of readFileSync(join(dir, f), 'utf8').split('\n')) if (l.includes(`;E;${id};`)) n++;
  return n;
}

/**
 * One scenario: a held job and a deleted one made by a normal gcd; then a gcd armed with
 * `crashAt` takes a job through its life; then a fresh gcd recovers. Returns the findings.
 */
async function scenario(crashAt: string | undefined): Promise<{
  g: GcdProcess;
  target: string | undefined;
  runs: number;
  final: JsonJobs['Jobs'];
  keys: string[];
}> {
  const setup = new GcdProcess(env());
  const dir = setup.stateDir;
  const runsFile = join(dir, 'runs');
  writeFileSync(runsFile, '');
  await setup.start();
  const held = setup.tool('gcqsub', ['--headnode', 'hn1', '-h', '-N', 'held', '--', 'true']);
  expect(held.status, held.stderr).to.equal(0);
  const del = setup.tool('gcqsub', ['--headnode', 'hn1', '-h', '-N', 'del', '--', 'true']);
  expect(del.status, del.stderr).to.equal(0);
  expect(setup.tool('gcqdel', [del.stdout.trim()]).status).to.equal(0);
  await setup.stop();

  const armed = new GcdProcess(env(crashAt ? { GC_TEST_CRASH_AT: crashAt } : {}), dir);
  await armed.start();
  const sub = armed.tool('gcqsub', ['--headnode', 'hn1', '-N', 'target', '--', 'sh', '-c', `echo run >> ${runsFile}; echo out; sleep 0.5`]);
  const target = sub.status === 0 ? sub.stdout.trim() : undefined;
  if (crashAt) {
    await until('gcd killed at its crash point', () => armed.proc?.exitCode !== null || armed.proc?.signalCode !== null, 30_000);
    expect(armed.proc?.signalCode).to.equal('SIGKILL', armed.log);
    // The embedded Redis gets SIGTERM with its parent (pdeathsig): let it flush and go.
    await until('redis-server gone', () => !existsSync(join(dir, 'redis', 'redis.pid')), 15_000);
  } else {
    await until('target finished', () => target !== undefined && jobs(armed)[target]?.job_state === 'F', 30_000);
    await armed.stop();
  }

  const g = new GcdProcess(env(), dir);
  await g.start();
  if (target) await until(`${target} finished after the restart`, () => jobs(g)[target]?.job_state === 'F', 60_000);
  // The restarted gcd works: a new job runs to its end.
  const after = g.tool('gcqsub', ['--headnode', 'hn1', '-W', 'block=true', '-N', 'after', '--', 'true']);
  expect(after.status, after.stderr).to.equal(0);
  // BullMQ completes (and removes) a job once its processor returns, just after F: wait for that.
  const c = await redisOf(dir);
  try {
    await until('BullMQ done with every job', async () => (await c.llen('copper:bull:jobs:active')) === 0, 15_000);
  } finally {
    c.disconnect();
  }
  await new Promise((r) => setTimeout(r, 100));
  const final = jobs(g);
  const keys = await keyState(dir);
  const runs = readFileSync(runsFile, 'utf8').split('\n').filter(Boolean).length;
  return { g, target, runs, final, keys };
}

describe('crash suite: gcd killed (SIGKILL) at each named step, then restarted (issue 13)', function () {
  this.timeout(180_000);
  let baseline: Awaited<ReturnType<typeof scenario>>;
  const made: GcdProcess[] = [];

  before(async function () {
    baseline = await scenario(undefined);
    made.push(baseline.g);
  });
  after(async function () {
    for (const g of made) await g.cleanup();
  });

  it('without a crash: the target runs once; the held job holds its counts, nothing else', function () {
    expect(baseline.runs).to.equal(1);
    const held = Object.entries(baseline.final).filter(([, j]) => j.job_state === 'H');
    expect(held.length).to.equal(1);
    expect(baseline.keys.filter((k) => k.startsWith('copper:usage:') && !k.includes(':fair:'))).to.deep.equal(
      ['g:physics', 'q:workq', 'qu:workq:alice', 'sys', 'u:alice'].map((e) => `copper:usage:${e} {"queued":"1","running":"0","ncpus":"0","mem":"0"}`),
      baseline.keys.join('\n'),
    );
  });

  for (const point of CRASH_POINTS) {
    it(`killed at ${point}: every job ends exactly once, nothing left over`, async function () {
      const s = await scenario(point);
      made.push(s.g);
      const byName = (name: string) => Object.entries(s.final).filter(([, j]) => (j as { Job_Name?: string }).Job_Name === name);
      // Held and deleted jobs stay so.
      expect(byName('held').map(([, j]) => j.job_state)).to.deep.equal(['H']);
      expect(byName('del').map(([, j]) => j.job_state)).to.deep.equal(['F']);
      if (point === 'submit:after-snapshot') {
        expect(s.target, 'no record was written').to.equal(undefined);
        expect(byName('target').length).to.equal(0);
        expect(s.runs).to.equal(0);
      } else {
        const [[id, t]] = byName('target');
        expect(t.job_state).to.equal('F');
        expect(accountingEnds(s.g.stateDir, id)).to.equal(1, `one end record for ${id}`);
        if (point.startsWith('deliver:') || point.startsWith('finish:')) {
          // The command had ended: it is finished with its status, never run again.
          expect(s.runs).to.equal(1);
          expect(t.Exit_status).to.equal(0);
          expect(readFileSync(join(s.g.stateDir, 'fake-headnodes', 'hn1', s.g.stateDir, `target.o${id.split('.')[0]}`), 'utf8')).to.equal('out\n');
        } else {
          // Lost before its command ended: run again (-r y), and this time to its end.
          expect(s.runs).to.be.within(1, 2);
          expect(t.Exit_status).to.equal(0, t.comment);
        }
      }
      // Nothing left: Redis keys as without the crash, no spool, one snapshot (the held job's), no process.
      expect(s.keys).to.deep.equal(baseline.keys);
      expect(readdirSync(join(s.g.stateDir, 'spool')).length).to.equal(0);
      expect(readdirSync(join(s.g.stateDir, 'fake-snapshots')).length).to.equal(1);
      expect(
        spawnSync('pgrep', ['-f', join(s.g.stateDir, 'runs')])
          .stdout.toString()
          .trim(),
      ).to.equal('', 'no job command left running');
    });
  }
});
