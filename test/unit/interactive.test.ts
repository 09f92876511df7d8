import { expect } from 'chai';
import { UsageError } from '../../src/errors.js';
import { parseQsub, type QsubContext, type QsubJob } from '../../src/pbs/qsub-options.js';
import type { JobRecord } from '../../src/queue/job.js';
import type { JobTerminal } from '../../src/drivers/driver.js';
import type { ToolRequest, ToolServices } from '../../src/server/commands/tool.js';
import { pbsEnvironment } from '../../src/scheduler/job-env.js';
import { jobAttributes } from '../../src/pbs/qstat-format.js';
import { interactiveExec } from '../../src/scheduler/interactive-exec.js';
import {
  completedLine,
  deletedLine,
  exitOf,
  formatCursor,
  interactiveRound,
  parseAttach,
  parseCursor,
  readyLine,
  startInteractive,
  waitingLine,
} from '../../src/server/commands/interactive.js';

/** gcqsub -I: how its options parse (as PBS's qsub -I), its cursor, messages and exit status. */
const SCRIPT = '#!/bin/bash\n#PBS -l walltime=0:20:00,ncpus=2\n#PBS -N shell\npython3 sim.py > out.dat\n';

function ctx(files: Record<string, string> = {}): QsubContext {
  return {
    cwd: '/root/w',
    env: { HOME: '/root', PATH: '/usr/bin:/bin', TERM: 'screen' },
    user: 'alice',
    group: 'alice',
    headnode: 'hn',
    submitHost: 'hn',
    now: Date.UTC(2026, 10, 28, 10),
    defaultQueue: 'workq',
    readFile: (p) => files[p],
    isMissing: (p) => !(p in files),
  };
}

function job(argv: string[], files: Record<string, string> = {}): QsubJob {
  const r = parseQsub(argv, ctx(files));
  if (r.kind !== 'job') throw new Error(`expected a job, got ${r.kind}`);
  return r;
}

function refusal(argv: string[], files: Record<string, string> = {}): string {
  try {
    parseQsub(argv, ctx(files));
  } catch (e) {
    expect(e).to.be.instanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error('expected a UsageError');
}

function record(over: Partial<JobRecord>): JobRecord {
  return {
    id: '7.srv',
    seq: 7,
    state: 'F',
    queuedAt: 0,
    runCount: 1,
    spec: job(['-I']).spec,
    ...over,
  };
}

describe('gcqsub -I: options as PBS qsub -I', () => {
  it('-I alone is an interactive job named STDIN that reads no script from stdin', () => {
    const r = job(['-I', '-l', 'walltime=0:10:00']);
    expect(r.interactive).to.equal(true);
    expect(r.spec.argv).to.deep.equal([]);
    expect(r.spec.script).to.equal(undefined);
    expect(r.spec.name).to.equal('STDIN');
    expect(r.spec.walltimeSec).to.equal(600);
    expect(r.warnings).to.deep.equal([]);
  });

  it('-I with a script: its #PBS directives apply, its commands are not run (and it says so)', () => {
    const r = job(['-I', 'job.sh'], { 'job.sh': SCRIPT });
    expect(r.interactive).to.equal(true);
    expect(r.spec.script).to.equal(undefined);
    expect(r.spec.argv).to.deep.equal([]);
    expect([r.spec.name, r.spec.walltimeSec, r.spec.resources.ncpus]).to.deep.equal(['shell', 1200, 2]);
    expect(r.warnings).to.deep.equal(['-I: the commands of job.sh are not run (its #PBS directives apply); type them in the interactive shell']);
  });

  it('#PBS -I in a script makes the job interactive', () => {
    const r = job(['job.sh'], { 'job.sh': '#PBS -I\n#PBS -l walltime=0:30:00\nbash\n' });
    expect(r.interactive).to.equal(true);
    expect(r.spec.script).to.equal(undefined);
  });

  it('-I -- command runs that command on the terminal instead of a login shell', () => {
    const r = job(['-I', '--', 'top', '-b']);
    expect([r.interactive, r.spec.argv, r.spec.name]).to.deep.equal([true, ['top', '-b'], 'top']);
  });

  it('a job without -I is not interactive', () => {
    expect(job(['--', 'true']).interactive).to.equal(false);
  });

  it('-I -X is accepted with a warning; -G is refused', () => {
    expect(job(['-I', '-X']).warnings).to.deep.equal([
      '-X ignored: no X11 forwarding into a clone; the interactive shell has no display (run graphical programs in your headnode)',
    ]);
    expect(refusal(['-G'])).to.match(/^-G: interactive GUI jobs are not supported/);
  });

  it('refuses -I with an array, with -W block=true, with --cron, and --attach among other options', () => {
    expect(refusal(['-I', '-J', '1-3'])).to.equal('-I cannot be used with an array job (-J/-t): an interactive job is one shell on one terminal');
    expect(refusal(['-I', '-W', 'block=true'])).to.equal('-I cannot be combined with -W block=true: gcqsub -I already waits for the job to end');
    expect(refusal(['-I', '--cron', '@daily'])).to.match(/^-I cannot be combined with --cron/);
    expect(refusal(['-I', '-l', 'ncpus=2', '--attach', '3'])).to.equal('--attach goes alone: gcqsub -I --attach job_identifier');
  });
});

describe('gcqsub -I --attach', () => {
  it('takes the id in any of its forms, -I optional', () => {
    expect(parseAttach(['-I', '--attach', '12.srv'])).to.equal('12.srv');
    expect(parseAttach(['--attach=12'])).to.equal('12');
    expect(parseAttach(['--attach', '12', '-I'])).to.equal('12');
  });
  it('is not asked for by other argv, even a command that has --attach after --', () => {
    expect(parseAttach(['-I'])).to.equal(undefined);
    expect(parseAttach(['-I', '--', 'prog', '--attach', 'x'])).to.equal(undefined);
  });
  it('refuses other options and a missing id', () => {
    expect(() => parseAttach(['-I', '-l', 'ncpus=2', '--attach', '3'])).to.throw(UsageError, /^--attach goes alone/);
    expect(() => parseAttach(['--attach'])).to.throw(UsageError, /^--attach goes alone/);
    expect(() => parseAttach(['--attach='])).to.throw(UsageError, /^--attach needs a job id/);
    expect(() => parseAttach(['--attach', '-I', '-x'])).to.throw(UsageError);
  });
});

describe("gcqsub -I's rounds", () => {
  it("prints PBS's messages", () => {
    expect(waitingLine('7.srv')).to.equal('qsub: waiting for job 7.srv to start\n');
    expect(readyLine('7.srv')).to.equal('qsub: job 7.srv ready\n\n');
    expect(completedLine('7.srv')).to.equal('qsub: job 7.srv completed\n');
    expect(deletedLine('7.srv')).to.equal('qsub: job 7.srv deleted\n');
  });

  it('the first answer waits, may be interrupted, and carries the job in its cursor', () => {
    const a = startInteractive(record({ state: 'Q' }), 'gcqsub: warning: x\n');
    expect([a.stdout, a.stderr, a.exitCode, a.interruptible, a.terminal]).to.deep.equal([waitingLine('7.srv'), 'gcqsub: warning: x\n', 0, true, undefined]);
    expect(parseCursor(a.more?.cursor)).to.deep.equal({ phase: 'wait', offset: 0, jobId: '7.srv' });
  });

  it("cursors round-trip; another tool's cursor is not one", () => {
    const c = { phase: 'on' as const, offset: 123456, jobId: '12[3].srv' };
    expect(parseCursor(formatCursor(c))).to.deep.equal(c);
    expect(parseCursor('0')).to.equal(undefined);
    expect(parseCursor('a3f09c')).to.equal(undefined);
    expect(parseCursor('qsub-I:on:-1:7.srv')).to.equal(undefined);
    expect(parseCursor(undefined)).to.equal(undefined);
  });

  it("the client exits with the job's status, as a shell reports it", () => {
    expect(exitOf(record({ exitStatus: 3 }))).to.equal(3);
    expect(exitOf(record({ exitStatus: 256 + 9 }))).to.equal(137);
    expect(exitOf(record({ exitStatus: -11 }))).to.equal(1);
    expect(exitOf(record({}))).to.equal(1);
  });
});

describe('an interactive job run', () => {
  it("runs on a terminal of the submitter's size with its TERM, and says PBS_ENVIRONMENT=PBS_INTERACTIVE", () => {
    const r = record({ state: 'R', spec: { ...job(['-I']).spec, interactive: { rows: 40, cols: 132, term: 'screen' } } });
    const env = pbsEnvironment(r);
    expect(env.PBS_ENVIRONMENT).to.equal('PBS_INTERACTIVE');
    expect(interactiveExec(r.spec.interactive!, env)).to.deep.equal({ terminal: { rows: 40, cols: 132 }, env: { ...env, TERM: 'screen' } });
    expect(pbsEnvironment(record({ spec: job(['--', 'true']).spec })).PBS_ENVIRONMENT).to.equal('PBS_BATCH');
  });

  it('gcqstat -f says interactive = True for it, and nothing for a batch job', () => {
    const spec = { ...job(['-I']).spec, interactive: { rows: 24, cols: 80, term: 'xterm' } };
    expect(jobAttributes(record({ spec }), { server: 'srv' }).filter((a) => a.name === 'interactive')).to.deep.equal([{ name: 'interactive', value: 'True' }]);
    expect(jobAttributes(record({ spec: job(['--', 'true']).spec }), { server: 'srv' }).some((a) => a.name === 'interactive')).to.equal(false);
  });
});

describe("gcqsub -I's rounds against a job (its store and terminal stubbed)", () => {
  const req = (over: Partial<ToolRequest> = {}): ToolRequest => ({
    actor: { kind: 'admin' },
    argv: ['-I'],
    cwd: '/',
    env: {},
    account: 'root',
    files: {},
    missing: [],
    terminal: { rows: 24, cols: 80 },
    ...over,
  });
  /** A job in a state, its terminal having printed `printed` (undefined: not made yet). */
  function services(j: JobRecord, printed: Buffer | undefined, typed: Buffer[] = [], deleted: string[] = []): ToolServices {
    const term: JobTerminal = {
      read: async (offset, max) => printed?.subarray(offset, offset + max),
      size: async () => printed?.length ?? 0,
      write: async (d) => void typed.push(d),
    };
    const scheduler = {
      get: async () => j,
      delete: async (_a: unknown, id: string) => void deleted.push(id),
    } as unknown as ToolServices['scheduler'];
    return { scheduler, headnodes: { get: async () => Promise.reject(new Error('unused')) }, serverName: 'srv', clones: { jobTerminal: () => term } };
  }
  const interactive = { rows: 24, cols: 80, term: 'xterm' };
  const running = (over: Partial<JobRecord> = {}): JobRecord => record({ state: 'R', cloneId: 'j7-r1', spec: { ...job(['-I']).spec, interactive }, ...over });

  it('waits while the job is queued or its terminal is not there yet, then says ready', async () => {
    const cur = { phase: 'wait' as const, offset: 0, jobId: '7.srv' };
    const q = await interactiveRound(req(), services(running({ state: 'Q' }), Buffer.from('x')), cur);
    expect([q.stdout, q.interruptible, q.terminal, q.more?.waitMs]).to.deep.equal(['', true, undefined, 1000]);
    const notYet = await interactiveRound(req(), services(running(), undefined), cur);
    expect([notYet.stdout, notYet.terminal]).to.deep.equal(['', undefined]);
    const ready = await interactiveRound(req(), services(running(), Buffer.alloc(0)), cur);
    expect([ready.stdout, ready.terminal]).to.deep.equal([readyLine('7.srv'), true]);
    expect(parseCursor(ready.more?.cursor)).to.deep.equal({ phase: 'on', offset: 0, jobId: '7.srv' });
  });

  it('Ctrl-C while waiting deletes the job', async () => {
    const deleted: string[] = [];
    const a = await interactiveRound(req({ interrupt: true }), services(running({ state: 'H' }), undefined, [], deleted), {
      phase: 'wait',
      offset: 0,
      jobId: '7.srv',
    });
    expect([a.stdout, a.exitCode, a.more, deleted]).to.deep.equal([deletedLine('7.srv'), 130, undefined, ['7.srv']]);
  });

  it('attached: keystrokes go in, output comes out from the offset, whole characters only', async () => {
    const typed: Buffer[] = [];
    const printed = Buffer.from('$ ls\r\nå');
    const a = await interactiveRound(
      req({ input: Buffer.from('ls\r').toString('base64') }),
      services(running(), printed.subarray(0, printed.length - 1), typed),
      {
        phase: 'on',
        offset: 2,
        jobId: '7.srv',
      },
    );
    expect(Buffer.concat(typed).toString()).to.equal('ls\r');
    expect(a.stdout).to.equal('ls\r\n'); // the cut "å" waits for its second byte
    expect(parseCursor(a.more?.cursor)?.offset).to.equal(printed.length - 2);
  });

  it("a client attaching again starts at a line's start near the end", async () => {
    const printed = Buffer.from(`${'x'.repeat(5000)}\nlast line\n$ `);
    const a = await interactiveRound(req(), services(running(), printed), { phase: 'rewait', offset: 0, jobId: '7.srv' });
    expect(parseCursor(a.more?.cursor)?.offset).to.equal(5001);
  });

  it("once F: PBS's completed line, the job's status, and how it ended when not by its shell", async () => {
    const cur = { phase: 'on' as const, offset: 0, jobId: '7.srv' };
    const done = await interactiveRound(req(), services(running({ state: 'F', exitStatus: 3, endReason: 'exit', comment: 'exit 3' }), undefined), cur);
    expect([done.stdout, done.stderr, done.exitCode, done.more]).to.deep.equal([completedLine('7.srv'), '', 3, undefined]);
    const wall = running({ state: 'F', exitStatus: -29, endReason: 'walltime', comment: 'killed: walltime 00:00:20 exceeded' });
    const w = await interactiveRound(req(), services(wall, undefined), cur);
    expect([w.stdout, w.stderr, w.exitCode]).to.deep.equal([completedLine('7.srv'), 'qsub: job 7.srv: killed: walltime 00:00:20 exceeded\n', 1]);
  });
});
