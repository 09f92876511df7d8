import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, ROOT, until } from '../helpers/gcd-process.js';

interface JsonJobs {
  Jobs: Record<string, { job_state: string; Exit_status?: number; comment?: string; Job_Name: string }>;
}

function jobsJson(g: GcdProcess, ...ids: string[]): JsonJobs {
  const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', ...ids]);
  if (r.status !== 0) throw new Error(`gcqstat failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as JsonJobs;
}

describe('gcd and the command-line tools as processes (test-double driver)', function () {
  let g: GcdProcess;
  const hn = () => join(g.stateDir, 'fake-headnodes', 'hn1');

  beforeEach(async function () {
    g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_LOCK_MS: '3000', GC_KILL_DELAY_MS: '500', GC_SERVER_NAME: 'srv' });
    await g.start();
  });
  afterEach(async function () {
    await g.cleanup();
  });

  it('gcqsub prints the job id and nothing else; gcqstat shows PBS\'s table', async function () {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'calc', '--', 'sleep', '3']);
    expect(r.status).to.equal(0, r.stderr);
    expect(r.stdout).to.equal('1.srv\n');
    await until('job running', () => g.tool('gcqstat', []).stdout.includes(' R '));
    const table = g.tool('gcqstat', []).stdout.split('\n');
    expect(table[0]).to.match(/^Job id\s+Name\s+User\s+Time Use S Queue$/);
    expect(table[1]).to.match(/^-{16}\s+-{16}\s+-{16}\s+-{8} - -{5}$/);
    expect(table[2]).to.match(/^1\.srv\s+calc\s+alice\s+\S+ R workq$/);
  });

  it('-W block=true waits and exits with the job\'s status; output lands in the headnode', async function () {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', '-W', 'block=true', '-N', 'blk', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7'], { cwd: '/tmp' });
    expect(r.status).to.equal(7);
    expect(readFileSync(join(hn(), 'tmp', 'blk.o1'), 'utf8')).to.equal('out\n');
    expect(readFileSync(join(hn(), 'tmp', 'blk.e1'), 'utf8')).to.equal('err\n');
    const j = jobsJson(g, '1').Jobs['1.srv']!;
    expect(j.job_state).to.equal('F');
    expect(j.Exit_status).to.equal(7);
  });

  it('runs `gcqsub prog args` as a command when prog is no file (the product\'s own form)', async function () {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', '-W', 'block=true', '-N', 'bare', 'echo', 'hello', 'world'], { cwd: '/tmp' });
    expect(r.status).to.equal(0, r.stderr);
    expect(readFileSync(join(hn(), 'tmp', 'bare.o1'), 'utf8')).to.equal('hello world\n');
  });

  it('reads #PBS directives from a script; the command line wins', async function () {
    const dir = g.stateDir;
    writeFileSync(join(dir, 'job.sh'), '#!/bin/sh\n#PBS -N fromscript\n#PBS -j oe\n#PBS -l walltime=00:05:00\necho "args:$1 name:$PBS_JOBNAME"\necho to-stderr >&2\n');
    const r = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'cli', '-W', 'block=true', 'job.sh'], { cwd: dir });
    expect(r.status).to.equal(0, r.stderr);
    const out = readFileSync(join(hn(), dir, 'cli.o1'), 'utf8');
    expect(out).to.contain('name:cli').and.to.contain('to-stderr');
    expect(existsSync(join(hn(), dir, 'cli.e1'))).to.equal(false);
  });

  it('bad input: one line on stderr, a non-zero exit, and the queue untouched', async function () {
    const queued = g.tool('gcqsub', ['--headnode', 'hn1', '--', 'sleep', '20']);
    expect(queued.status).to.equal(0);
    const cases: Array<[string, string[], RegExp]> = [
      ['gcqsub', ['--headnode', 'hn1', '-l', 'walltime=abc', '--', 'true'], /walltime/],
      ['gcqsub', ['--headnode', 'hn1', '-j', 'xx', '--', 'true'], /-j/],
      ['gcqsub', ['--headnode', 'hn1', 'missing.sh'], /missing\.sh: no such file/],
      ['gcqsub', ['--headnode', 'nosuch', '--', 'true'], /unknown headnode nosuch/],
      ['gcqsub', ['--', 'true'], /headnode/],
      ['gcqdel', ['4242'], /Unknown Job Id 4242/],
      ['gcqdel', ['not-an-id'], /Unknown Job Id not-an-id/],
      ['gcqstat', ['-F', 'xml', '-f'], /json/],
      ['gcqstat', ['--nope'], /nope/],
    ];
    for (const [tool, args, re] of cases) {
      const r = g.tool(tool, args);
      expect(r.status, `${tool} ${args.join(' ')}`).to.not.equal(0);
      expect(r.stderr.trim().split('\n'), `${tool} ${args.join(' ')}: ${r.stderr}`).to.have.length(1);
      expect(r.stderr).to.match(re);
      expect(r.stdout).to.equal('');
    }
    const after = jobsJson(g);
    expect(Object.keys(after.Jobs)).to.deep.equal([queued.stdout.trim()]);
  });

  it('Redis unreachable: gcd says so in one line and exits non-zero; an external Redis (GC_REDIS_URL) works', async function () {
    const env = { ...g.env, GC_STATE_DIR: join(g.stateDir, 'other'), GC_REDIS_URL: 'redis://127.0.0.1:1/0' };
    const bad = spawnSync(process.execPath, ['bin/gcd.js'], { env, encoding: 'utf8', cwd: ROOT, timeout: 30_000 });
    expect(bad.status).to.equal(3);
    expect(bad.stderr.trim().split('\n')).to.have.length(1);
    expect(bad.stderr).to.match(/^gcd: Redis unreachable at redis:\/\/127\.0\.0\.1:1\/0: .*ECONNREFUSED/);

    // A TCP Redis of the admin's own, on a free port, with a password.
    const port = 20000 + Math.floor(Math.random() * 20000);
    const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--requirepass', 'pw', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' });
    try {
      await until('redis up', () => spawnSync('redis-cli', ['-p', String(port), '-a', 'pw', '--no-auth-warning', 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG');
      const ext = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_REDIS_URL: `redis://:pw@127.0.0.1:${port}/0` });
      try {
        await ext.start();
        const r = ext.tool('gcqsub', ['--headnode', 'hn1', '-W', 'block=true', '--', 'true']);
        expect(r.status, r.stderr).to.equal(0);
        const keys = spawnSync('redis-cli', ['-p', String(port), '-a', 'pw', '--no-auth-warning', '--scan', '--pattern', 'copper:bull:jobs:*'], { encoding: 'utf8' }).stdout;
        expect(keys).to.contain('copper:bull:jobs:', 'a plain BullMQ queue in that Redis');
        expect(existsSync(join(ext.stateDir, 'redis'))).to.equal(false, 'no embedded Redis was started');
      } finally {
        await ext.cleanup();
      }
    } finally {
      redis.kill('SIGTERM');
    }
  });

  it('a second gcd on the same state folder is refused', function () {
    const second = spawnSync(process.execPath, ['bin/gcd.js'], { env: g.env, encoding: 'utf8', cwd: ROOT });
    expect(second.status).to.not.equal(0);
    expect(second.stderr.trim()).to.match(/^gcd: another gcd \(pid \d+\) is running on /);
  });

  it('gcqdel stops a running job and removes a queued one', async function () {
    const a = g.tool('gcqsub', ['--headnode', 'hn1', '--', 'sleep', '30.02']).stdout.trim();
    const b = g.tool('gcqsub', ['--headnode', 'hn1', '-h', '--', 'true']).stdout.trim();
    await until('a running', () => jobsJson(g, a).Jobs[a]!.job_state === 'R');
    await until('its command running', () => spawnSync('pgrep', ['-f', '^sleep 30\\.02$']).status === 0);
    expect(jobsJson(g, b).Jobs[b]!.job_state).to.equal('H');
    expect(g.tool('gcqdel', [a, b]).status).to.equal(0);
    await until('a finished', () => jobsJson(g, a).Jobs[a]!.job_state === 'F');
    expect(jobsJson(g, a).Jobs[a]!.Exit_status).to.equal(271);
    expect(jobsJson(g, b).Jobs[b]!.job_state).to.equal('F');
    expect(spawnSync('pgrep', ['-f', '^sleep 30\\.02$']).status).to.equal(1, 'no job process left');
  });

  it('kill -9 gcd while jobs run and wait: every job ends exactly once, nothing is left behind', async function () {
    const marks = join(g.stateDir, 'marks');
    const rerun = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'rerun', '--', 'sh', '-c', `echo start >> ${marks}; sleep 8; echo done`]).stdout.trim();
    const norerun = g.tool('gcqsub', ['--headnode', 'hn1', '-r', 'n', '--', 'sleep', '40.03']).stdout.trim();
    await until('both running', () => {
      const j = jobsJson(g).Jobs;
      return j[rerun]?.job_state === 'R' && j[norerun]?.job_state === 'R';
    });
    const waiting = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'waiter', '-a', '2359', '--', 'true']).stdout.trim();
    const queued = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'later', '--', 'sh', '-c', 'echo once']).stdout.trim();
    await g.kill9();
    expect(spawnSync('pgrep', ['-f', '^sleep 40\\.03$']).status).to.equal(1, 'job processes die with gcd');
    await g.start();
    await until('all ran', () => {
      const j = jobsJson(g).Jobs;
      return j[rerun]?.job_state === 'F' && j[norerun]?.job_state === 'F' && j[queued]?.job_state === 'F';
    }, 60_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${JSON.stringify(jobsJson(g).Jobs)}\n${g.log}`);
    });
    const j = jobsJson(g).Jobs;
    expect(j[rerun]!.Exit_status).to.equal(0);
    expect(readFileSync(marks, 'utf8')).to.equal('start\nstart\n', 'rerunnable job ran again, once');
    expect(j[norerun]!.Exit_status).to.equal(-3);
    expect(j[norerun]!.comment).to.match(/not rerunnable/);
    expect(j[queued]!.Exit_status).to.equal(0);
    expect(readFileSync(join(hn(), g.stateDir, 'later.o' + queued.split('.')[0]), 'utf8')).to.equal('once\n');
    expect(j[waiting]!.job_state).to.equal('W', 'a deferred job survives the crash, still deferred');
    expect(readdirSync(join(g.stateDir, 'spool'))).to.deep.equal([]);
  });
});
