import { expect } from 'chai';
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CliAnswer } from '../../src/api/cli-call.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import type { JobSpec } from '../../src/queue/job.js';
import { ADMIN, type Actor } from '../../src/scheduler/actor.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { completeUtf8 } from '../../src/server/commands/gcqpeek.js';
import { parseExecArgs } from '../../src/server/commands/gcqexec.js';
import { runTool } from '../../src/server/commands/index.js';
import { terminalSessions } from '../../src/server/commands/terminal-sessions.js';
import type { ToolServices } from '../../src/server/commands/tool.js';
import type { TestRedis } from '../helpers/env.js';
import { until } from '../helpers/gcd-process.js';
import { startSchedulerFixture, stopSchedulerFixture } from '../helpers/scheduler.js';
import { testSpec } from '../helpers/jobs.js';

const guest = (owner: string): Actor => ({ kind: 'guest', identity: { vmId: `${owner}-hn`, kind: 'headnode', headnode: 'hn1', owner, group: owner } });
const ALICE = guest('alice');
const BOB = guest('bob');

/**
 * gcqpeek, gcqexec and gcqstat's live fields as gcd runs them, against a real Scheduler on a
 * real redis-server with the test-double driver (its "clones" are host processes; the same
 * commands against real clones are in test/vm/watch-enter.test.ts).
 */
describe('gcqpeek, gcqexec and live gcqstat fields (test-double driver, real redis-server)', function () {
  this.timeout(30_000);
  let r: TestRedis;
  let driver: FakeDriver;
  let sched: Scheduler;
  let services: ToolServices;
  let work: string;

  const call = (tool: string, argv: string[], actor: Actor = ALICE, cursor?: string): Promise<CliAnswer> =>
    runTool(tool, { actor, argv, cwd: '/', env: {}, account: 'alice', files: {}, missing: [], ...(cursor !== undefined ? { cursor } : {}) }, services);

  /** What a thin client does with `more`: print each round, ask again with its cursor. */
  async function follow(tool: string, argv: string[], actor: Actor = ALICE): Promise<{ rounds: Array<{ at: number; text: string }>; last: CliAnswer }> {
    const rounds: Array<{ at: number; text: string }> = [];
    let cursor: string | undefined;
    for (let i = 0; i < 500; i++) {
      const a = await call(tool, argv, actor, cursor);
      if (a.stdout) rounds.push({ at: Date.now(), text: a.stdout });
      if (!a.more) return { rounds, last: a };
      cursor = a.more.cursor;
      await new Promise((res) => setTimeout(res, Math.min(a.more!.waitMs, 200)));
    }
    throw new Error('follow did not end');
  }

  async function submit(over: Partial<JobSpec>): Promise<string> {
    const [rec] = await sched.submit([testSpec({ cwd: work, ...over })]);
    return rec.id;
  }
  const state = async (id: string): Promise<string> => (await sched.get(ADMIN, id)).state;

  beforeEach(async function () {
    work = realpathSync(mkdtempSync(join(tmpdir(), 'copper-we-')));
    ({ r, driver, sched } = await startSchedulerFixture({ scheduler: { capacity: { ncpus: 2, memMiB: 4096 } } }));
    services = {
      scheduler: sched,
      headnodes: {
        get: async () => {
          throw new Error('unused');
        },
      },
      serverName: 'srv',
      clones: driver,
    };
  });

  afterEach(async function () {
    await stopSchedulerFixture({ sched, driver, r });
    rmSync(work, { recursive: true, force: true });
  });

  it("gcqpeek prints a running job's stdout so far, -e its stderr; -f follows it line by line until it ends", async function () {
    const id = await submit({ argv: ['sh', '-c', 'echo err-line >&2; for i in 1 2 3 4 5; do echo line $i; sleep 0.4; done'] });
    await until('job running', async () => (await state(id)) === 'R');
    await until('first line', async () => (await call('gcqpeek', [id])).stdout.startsWith('line 1\n'));
    const err = await call('gcqpeek', ['-e', id]);
    expect([err.stdout, err.exitCode]).to.deep.equal(['err-line\n', 0]);

    const { rounds, last } = await follow('gcqpeek', ['-f', id]);
    expect(last.exitCode).to.equal(0);
    expect(rounds.map((x) => x.text).join('')).to.equal('line 1\nline 2\nline 3\nline 4\nline 5\n');
    // It printed as the job ran, not all at once at the end.
    expect(rounds.length).to.be.greaterThan(2);
    expect(await state(id)).to.equal('F');
  });

  it('gcqpeek -f started on a held job waits for it to run, then follows it; without -f it is refused', async function () {
    const [rec] = await sched.submit([testSpec({ cwd: work, argv: ['sh', '-c', 'echo a; sleep 0.5; echo b'] })], { hold: true });
    const id = rec.id;
    expect(await state(id)).to.equal('H');
    const now = await call('gcqpeek', [id]);
    expect([now.stderr, now.exitCode]).to.deep.equal([`gcqpeek: Request invalid for state of job ${id} (H): it is not running\n`, 1]);
    const first = await call('gcqpeek', ['-f', id]);
    expect(first.more).to.deep.equal({ cursor: '0', waitMs: 1000 });
    await sched.release(ADMIN, id);
    const { rounds } = await follow('gcqpeek', ['-f', id]);
    expect(rounds.map((x) => x.text).join('')).to.equal('a\nb\n');
  });

  it('gcqexec runs a command beside the job in its directory, with its environment and exit status', async function () {
    const id = await submit({ argv: ['sleep', '20'] });
    await until('job running', async () => (await state(id)) === 'R');
    const pwd = await call('gcqexec', [id, '--', 'sh', '-c', 'pwd; echo "$PBS_JOBID"; echo to-err >&2; exit 3']);
    expect(pwd.stdout).to.equal(`${work}\n${id}\n`);
    expect(pwd.stderr).to.equal('to-err\n');
    expect(pwd.exitCode).to.equal(3);
    // Everything after the id is the command's, options included.
    const ls = await call('gcqexec', [id, 'ls', '-d', work]);
    expect([ls.stdout, ls.exitCode]).to.deep.equal([`${work}\n`, 0]);
    // The administrator may enter anyone's job.
    expect((await call('gcqexec', [id, '--', 'true'], ADMIN)).exitCode).to.equal(0);
    await sched.delete(ADMIN, id);
  });

  it("another user's job is unknown to gcqpeek and gcqexec; bad arguments get one line and exit 2", async function () {
    const id = await submit({ argv: ['sleep', '20'] });
    await until('job running', async () => (await state(id)) === 'R');
    for (const [tool, argv] of [
      ['gcqpeek', [id]],
      ['gcqpeek', ['-f', id]],
      ['gcqexec', [id, '--', 'hostname']],
    ] as const) {
      const a = await call(tool, [...argv], BOB);
      expect([a.stdout, a.stderr, a.exitCode], `${tool} ${argv.join(' ')}`).to.deep.equal(['', `${tool}: Unknown Job Id ${id}\n`, 153]);
    }
    const cases: Array<[string, string[], RegExp]> = [
      ['gcqpeek', [], /^gcqpeek: a job id is required\n$/],
      ['gcqpeek', [id, id], /^gcqpeek: one job id at a time/],
      ['gcqpeek', ['-x', id], /^gcqpeek: Unknown argument: x\n$/],
      ['gcqexec', [], /^gcqexec: a job id is required\n$/],
      ['gcqexec', ['-v', id], /^gcqexec: unknown option '-v'\n$/],
      ['gcqexec', [id], /^gcqexec: an interactive shell needs a terminal \(stdin is not one\): give a command, gcqexec ID -- CMD/],
    ];
    for (const [tool, argv, re] of cases) {
      const a = await call(tool, argv);
      expect(a.stderr, `${tool} ${argv.join(' ')}`).to.match(re);
      expect(a.stderr.trim().split('\n'), 'one line').to.have.length(1);
      expect(a.exitCode, `${tool} ${argv.join(' ')}`).to.equal(2);
    }
    // From a terminal, but the test double has no terminals: refused in one line, not crashed.
    const noTty = await runTool(
      'gcqexec',
      { actor: ALICE, argv: [id], cwd: '/', env: {}, account: 'alice', files: {}, missing: [], terminal: { rows: 24, cols: 80 } },
      services,
    );
    expect([noTty.stderr, noTty.exitCode]).to.deep.equal([
      "gcqexec: this gcd's driver cannot open a shell in a job: give a command, gcqexec ID -- CMD [ARG...]\n",
      2,
    ]);
    const none = await call('gcqexec', ['999', '--', 'true']);
    expect([none.stderr, none.exitCode]).to.deep.equal(['gcqexec: Unknown Job Id 999\n', 153]);
    await sched.delete(ADMIN, id);
    await until('job ended', async () => (await state(id)) === 'F');
    const ended = await call('gcqexec', [id, '--', 'true']);
    expect(ended.stderr).to.equal(`gcqexec: Request invalid for state of job ${id} (F): it is not running\n`);
    expect(ended.exitCode).to.equal(1);
  });

  it('gcqstat -f shows exec_host and a live resources_used.walltime while the job runs', async function () {
    const id = await submit({ argv: ['sleep', '20'], resources: { ncpus: 2, memMiB: 0 } });
    await until('job running', async () => (await state(id)) === 'R');
    await new Promise((res) => setTimeout(res, 1100));
    const f = await call('gcqstat', ['-f', id]);
    expect(f.stdout).to.match(new RegExp(`\\n    exec_host = hn1-${id.split('.')[0]}/0\\*2\\n`));
    const json = JSON.parse((await call('gcqstat', ['-f', '-F', 'json', id])).stdout) as {
      Jobs: Record<string, { exec_host: string; resources_used: { walltime: string } }>;
    };
    const j = json.Jobs[id];
    expect(j.exec_host).to.equal(`hn1-${id.split('.')[0]}/0*2`);
    expect(j.resources_used.walltime).to.not.equal('00:00:00');
    await sched.delete(ADMIN, id);
  });

  it("parses gcqexec's argv by hand and keeps UTF-8 characters whole across rounds", function () {
    expect(parseExecArgs(['12', 'ls', '-l'])).to.deep.equal({ id: '12', command: ['ls', '-l'] });
    expect(parseExecArgs(['12', '--', 'ls', '--', 'x'])).to.deep.equal({ id: '12', command: ['ls', '--', 'x'] });
    expect(parseExecArgs(['--', '12'])).to.deep.equal({ id: '12', command: [] });
    expect(parseExecArgs(['--help'])).to.equal('help');
    const e = Buffer.from('aé€😀');
    for (let n = 0; n <= e.length; n++) {
      const whole = completeUtf8(e.subarray(0, n));
      expect(whole.toString('utf8')).to.not.include('\ufffd');
      expect(n - whole.length).to.be.lessThan(4);
    }
    expect(completeUtf8(e).length).to.equal(e.length);
  });

  it('a terminal session goes on only for the channel that opened it, and ends with its shell', async function () {
    const rounds: Buffer[] = [];
    let closed = 0;
    const outputs: Array<{ output: Buffer; exitCode?: number }> = [
      { output: Buffer.from('$ ') },
      { output: Buffer.from([0xe2, 0x82]) },
      { output: Buffer.from([0xac, 0x0a]), exitCode: 5 },
    ];
    const id = terminalSessions.add(ALICE, {
      round: async (input) => (rounds.push(input), outputs.shift()!),
      close: async () => void closed++,
    });
    const round = (actor: Actor, input: string) =>
      runTool(
        'gcqexec',
        { actor, argv: ['1'], cwd: '/', env: {}, account: 'alice', files: {}, missing: [], cursor: id, input: Buffer.from(input).toString('base64') },
        services,
      );
    const bob = await round(BOB, 'x');
    expect([bob.stderr, bob.exitCode]).to.deep.equal(['gcqexec: no such terminal session (it ended, or its client was gone too long)\n', 2]);
    const a1 = await round(ALICE, 'ls\r');
    expect([a1.stdout, a1.terminal, a1.more?.cursor]).to.deep.equal(['$ ', true, id]);
    // A character cut between rounds comes out whole in the next one.
    const a2 = await round(ALICE, '');
    expect([a2.stdout, a2.more?.waitMs]).to.deep.equal(['', 0]);
    const a3 = await round(ALICE, 'exit 5\r');
    expect([a3.stdout, a3.exitCode, a3.more]).to.deep.equal(['\u20ac\n', 5, undefined]);
    expect(rounds.map((b) => b.toString())).to.deep.equal(['ls\r', '', 'exit 5\r']);
    expect(closed).to.equal(1);
    const gone = await round(ALICE, '');
    expect(gone.exitCode).to.equal(2);
  });
});
