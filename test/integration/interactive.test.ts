import { expect } from 'chai';
import { join } from 'node:path';
import { BIN, GcdProcess, until } from '../helpers/gcd-process.js';
import { TmuxTerminal } from '../helpers/tmux.js';

/**
 * gcqsub -I waiting for its job, from a real terminal (tmux) with gcd as a process and the
 * test-double driver: PBS's waiting line, Ctrl-C deletes the job, --attach of a job that
 * waits, refusals. The session itself, with real clones, is in test/vm/interactive.test.ts.
 */
interface QstatJson {
  Jobs: Record<string, { job_state: string; comment?: string }>;
}

describe('gcqsub -I while its job waits (test-double driver, a tmux terminal)', function () {
  this.timeout(60_000);
  let g: GcdProcess;
  const qstat = (id: string) => (JSON.parse(g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]).stdout) as QstatJson).Jobs[id];
  const terms: TmuxTerminal[] = [];
  /** A tool on a terminal; its exit status is printed after it. */
  const onTerminal = (name: string, tool: string, args: string[]): TmuxTerminal => {
    const envs = ['GC_STATE_DIR', 'GC_SERVER_NAME'].map((k) => `${k}=${g.env[k] ?? ''}`).join(' ');
    const t = new TmuxTerminal(name, `env ${envs} ${process.execPath} ${join(BIN, `${tool}.js`)} ${args.join(' ')}; echo EXITED=$?; sleep 600`);
    terms.push(t);
    return t;
  };

  before(async function () {
    g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_SERVER_NAME: 'srv' });
    await g.start();
  });
  after(async function () {
    for (const t of terms) t.kill();
    await g?.cleanup();
  });

  it('says it waits for the job; Ctrl-C deletes the job and ends the client', async function () {
    const t = onTerminal('ia-ctrlc', 'gcqsub', ['-I', '-h', '--headnode', 'hn1', '-l', 'walltime=0:05:00']);
    await until('the waiting line', () => /qsub: waiting for job \d+\.srv to start/.test(t.screen()), 20_000);
    const id = /qsub: waiting for job (\S+) to start/.exec(t.screen())![1];
    expect(qstat(id).job_state).to.equal('H');
    await new Promise((r) => setTimeout(r, 1500)); // a few rounds of waiting: still there
    expect(qstat(id).job_state).to.equal('H');
    t.keys('C-c');
    await until('the client ended', () => t.screen().includes('EXITED='), 20_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${t.screen()}`);
    });
    expect(t.screen()).to.include(`qsub: job ${id} deleted\nEXITED=130`);
    expect(qstat(id).job_state).to.equal('F');
    expect(qstat(id).comment).to.match(/deleted/);
  });

  it('--attach to a job that still waits: waits the same way, and Ctrl-C deletes it', async function () {
    const sub = g.tool('gcqsub', ['--headnode', 'hn1', '-h', '--', 'true']);
    expect(sub.status, sub.stderr).to.equal(0);
    // Not interactive: --attach says so.
    const notI = g.tool('gcqsub', ['-I', '--attach', sub.stdout.trim()]);
    expect([notI.status, notI.stderr]).to.deep.equal([
      2,
      `gcqsub: job ${sub.stdout.trim()} is not an interactive job (gcqsub -I); gcqexec ${sub.stdout.trim()} opens a shell beside it\n`,
    ]);

    const first = onTerminal('ia-first', 'gcqsub', ['-I', '-h', '--headnode', 'hn1']);
    await until('the waiting line', () => /qsub: waiting for job \S+ to start/.test(first.screen()), 20_000);
    const id = /qsub: waiting for job (\S+) to start/.exec(first.screen())![1];
    first.kill(); // the connection drops: the job stays
    await new Promise((r) => setTimeout(r, 500));
    expect(qstat(id).job_state).to.equal('H');

    const again = onTerminal('ia-again', 'gcqsub', ['-I', '--attach', id]);
    await until('the waiting line again', () => again.screen().includes(`qsub: waiting for job ${id} to start`), 20_000);
    again.keys('C-c');
    await until('the client ended', () => again.screen().includes('EXITED='), 20_000);
    expect(again.screen()).to.include(`qsub: job ${id} deleted\nEXITED=130`);
    expect(qstat(id).job_state).to.equal('F');
  });

  it('refuses -I without a terminal, and queues nothing', async function () {
    const before = g.tool('gcqstat', ['-x']).stdout;
    const r = g.tool('gcqsub', ['-I', '--headnode', 'hn1']);
    expect([r.status, r.stderr]).to.deep.equal([2, 'gcqsub: -I needs a terminal: run gcqsub -I from an interactive shell (its stdin and stdout a terminal)\n']);
    expect(g.tool('gcqstat', ['-x']).stdout).to.equal(before);
  });
});
