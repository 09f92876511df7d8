import { expect } from 'chai';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * Issue 13 item 14: the embedded Redis killed (SIGKILL) while jobs run. gcd starts it again
 * on the same AOF; every job ends exactly once (its command ran once, one end record) and
 * gcqstat answers again. Real redis-server, test-double driver (commands are host processes).
 */

interface JsonJobs {
  Jobs: Record<string, { job_state: string; Exit_status?: number; comment?: string; Job_Name?: string }>;
}

function jobs(g: GcdProcess): JsonJobs['Jobs'] | undefined {
  const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json']);
  return r.status === 0 ? (JSON.parse(r.stdout) as JsonJobs).Jobs : undefined;
}

function redisPid(g: GcdProcess): number {
  const f = join(g.stateDir, 'redis', 'redis.pid');
  return existsSync(f) ? Number(readFileSync(f, 'utf8').trim()) : 0;
}

function endRecords(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const acct = join(dir, 'accounting');
  for (const f of existsSync(acct) ? readdirSync(acct) : []) {
    for (const l of readFileSync(join(acct, f), 'utf8').split('\n')) {
      const m = /;E;([^;]+);/.exec(l);
      if (m) out.set(m[1], (out.get(m[1]) ?? 0) + 1);
    }
  }
  return out;
}

describe('Redis killed while jobs run: gcd starts it again, every job ends once (issue 13 item 14)', function () {
  this.timeout(180_000);
  let g: GcdProcess;

  beforeEach(async function () {
    g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_SERVER_NAME: 'srv', GC_LOCK_MS: '3000', GC_CAPACITY_NCPUS: '3' });
    await g.start();
  });
  afterEach(async function () {
    await g.cleanup();
  });

  async function killRedisDuring(jobsToRun: number, sleepSec: number, waitFor: (j: JsonJobs['Jobs']) => boolean): Promise<void> {
    const runs = join(g.stateDir, 'runs');
    writeFileSync(runs, '');
    const ids: string[] = [];
    for (let i = 0; i < jobsToRun; i++) {
      const r = g.tool('gcqsub', ['--headnode', 'hn1', '-N', `j${i}`, '--', 'sh', '-c', `echo $PBS_JOBID >> ${runs}; sleep ${sleepSec}; echo done`]);
      expect(r.status, r.stderr).to.equal(0);
      ids.push(r.stdout.trim());
    }
    await until('jobs running', () => {
      const j = jobs(g);
      return j !== undefined && waitFor(j);
    });
    const before = redisPid(g);
    expect(before).to.be.greaterThan(0);
    process.kill(before, 'SIGKILL');
    await until('redis-server started again by gcd', () => redisPid(g) !== before && redisPid(g) > 0 && jobs(g) !== undefined, 30_000);
    expect(g.log).to.contain('embedded redis-server died; starting it again');
    await until('every job finished', () => ids.every((id) => jobs(g)?.[id]?.job_state === 'F'), 120_000);
    const final = jobs(g)!;
    const ran = readFileSync(runs, 'utf8').split('\n').filter(Boolean);
    const ends = endRecords(g.stateDir);
    for (const id of ids) {
      expect(final[id].Exit_status, `${id}: ${final[id].comment}`).to.equal(0);
      expect(ran.filter((x) => x === id).length).to.equal(1, `${id} ran once`);
      expect(ends.get(id)).to.equal(1, `${id} has one end record`);
    }
    // The counts follow: nothing counted as queued or running any more.
    const st = g.tool('gcqstat', []);
    expect(st.status, st.stderr).to.equal(0);
    expect(st.stdout.trim()).to.equal('');
  }

  it('killed while a job runs', async function () {
    await killRedisDuring(1, 3, (j) => Object.values(j).some((x) => x.job_state === 'R'));
  });

  it('killed while several jobs run and others wait', async function () {
    await killRedisDuring(6, 2, (j) => Object.values(j).filter((x) => x.job_state === 'R').length >= 2);
  });
});
