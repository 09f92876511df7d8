import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { BIN, GcdProcess, until } from '../helpers/gcd-process.js';
import { TmuxTerminal } from '../helpers/tmux.js';

/**
 * gcqsub -I with real clone VMs under TCG, on real terminals: the host's client in tmux, the
 * guest's (inside the headnode) on a script(1) pseudo-terminal. The clone's login shell
 * answers on the submitter's terminal; `exit` ends the job with the shell's status, its files
 * come home and its clone is gone; a dropped client leaves the session, which --attach takes up.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface QstatJson {
  Jobs: Record<string, { job_state: string; Exit_status?: number; comment?: string }>;
}

describe('gcqsub -I with real clones @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  const terms: TmuxTerminal[] = [];
  const qstat = (id: string) => (JSON.parse(g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]).stdout) as QstatJson).Jobs[id];
  const inside = (script: string) => g.toolAsync('gc', ['headnode', 'exec', 'hn', '--timeout', '300', '--', 'sh', '-c', script]);
  /** The host's gcqsub on a tmux terminal; its exit status is printed after it. */
  const onTerminal = (name: string, args: string[]): TmuxTerminal => {
    const envs = ['GC_STATE_DIR', 'GC_IMAGE_DIR', 'GC_SERVER_NAME'].map((k) => `${k}=${g.env[k] ?? ''}`).join(' ');
    const t = new TmuxTerminal(name, `env ${envs} ${process.execPath} ${join(BIN, 'gcqsub.js')} ${args.join(' ')}; echo EXITED=$?; sleep 600`);
    terms.push(t);
    return t;
  };
  /** Wait for the screen to show something; the client's end (EXITED=) before it is a failure at once. */
  const see = async (t: TmuxTerminal, what: string, test: (screen: string) => boolean, ms: number): Promise<void> => {
    const ended = (s: string): boolean => s.includes('EXITED=') && !test(s);
    await until(what, () => test(t.screen()) || ended(t.screen()), ms).catch(() => undefined);
    const s = t.screen();
    if (!test(s)) throw new Error(`no ${what} on the terminal:\n${s}\ngcd's log ends:\n${g.log.split('\n').slice(-30).join('\n')}`);
  };
  /** QEMU processes of a job's clones (their command lines name the clone id, j<seq>-r<n>). */
  const clonesOf = (seq: string): string =>
    spawnSync('pgrep', ['-af', `qemu.*${g.stateDir}.*j${seq}-r`])
      .stdout.toString()
      .trim();

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000' });
    await g.start();
    g.startHeadnodes([['hn', 'alice']], 384);
    const mk = g.inHeadnode('hn', 'mkdir -p /root/w && rm -f /root/w/i.txt');
    expect(mk.status, mk.stderr).to.equal(0);
  });
  after(async function () {
    for (const t of terms) t.kill();
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    await g.cleanup();
  });

  it("opens the clone's login shell on the terminal; exit ends the job with its status and brings its files home", async function () {
    const t = onTerminal('ivm-a', ['-I', '--headnode', 'hn', '-d', '/root/w', '-l', 'walltime=0:10:00']);
    await see(t, 'the waiting line', (s) => /qsub: waiting for job \d+\.srv to start/.test(s), 30_000);
    const id = /qsub: waiting for job (\S+) to start/.exec(t.screen())![1];
    const seq = id.split('.')[0];
    await see(t, 'the ready line', (s) => s.includes(`qsub: job ${id} ready`), 120_000);
    await see(t, "the clone's prompt", (s) => s.includes(`@hn-${seq}:`), 60_000);
    expect(qstat(id).job_state).to.equal('R');
    t.keys('echo "in $(hostname) at $(pwd) as $PBS_ENVIRONMENT: $((6*7))" | tee i.txt', 'Enter');
    await see(t, "a command's output", (s) => s.includes(`in hn-${seq} at /root/w as PBS_INTERACTIVE: 42`), 60_000);
    t.keys('exit 3', 'Enter');
    await see(t, 'the client ended', (s) => s.includes('EXITED='), 90_000);
    expect(t.screen()).to.include(`qsub: job ${id} completed\nEXITED=3`);

    const j = qstat(id);
    expect([j.job_state, j.Exit_status]).to.deep.equal(['F', 3]);
    // Its files came home before F (stage-out); no .o/.e files (the terminal had the output).
    const home = g.inHeadnode('hn', 'cat /root/w/i.txt; ls /root/w');
    expect(home.stdout).to.equal(`in hn-${seq} at /root/w as PBS_INTERACTIVE: 42\ni.txt\n`);
    expect(clonesOf(seq)).to.equal('');
  });

  it('a dropped client leaves the session running; --attach from inside the headnode takes it up', async function () {
    const t = onTerminal('ivm-b', ['-I', '--headnode', 'hn', '-d', '/root/w']);
    await see(t, 'the waiting line', (s) => /qsub: waiting for job \d+\.srv to start/.test(s), 30_000);
    const id = /qsub: waiting for job (\S+) to start/.exec(t.screen())![1];
    const seq = id.split('.')[0];
    await see(t, "the clone's prompt", (s) => s.includes(`@hn-${seq}:`), 120_000);
    t.keys('cd /tmp; echo before-drop', 'Enter');
    await see(t, 'the first output', (s) => /^before-drop$/m.test(s), 30_000);
    t.kill(); // the terminal goes: the client with it
    await new Promise((r) => setTimeout(r, 3000));
    expect(qstat(id).job_state).to.equal('R');

    // The guest's client, on a pseudo-terminal, keys typed once it has attached.
    const typed = `(sleep 12; printf 'echo "back in $(hostname) at $(pwd)"\\r'; sleep 8; printf 'exit 4\\r'; sleep 15)`;
    const r = await inside(`${typed} | script -qec "gcqsub -I --attach ${id}" /dev/null; echo "status=$?"`);
    expect(r.stdout).to.include(`qsub: job ${id} ready`);
    expect(r.stdout).to.include(`back in hn-${seq} at /tmp`);
    expect(r.stdout).to.include(`qsub: job ${id} completed`);
    expect(r.stdout).to.match(/status=4\n$/);
    const j = qstat(id);
    expect([j.job_state, j.Exit_status]).to.deep.equal(['F', 4]);
    expect(clonesOf(seq)).to.equal('');
  });

  it('walltime ends a session whose client has gone: the job is F by walltime and its clone is gone', async function () {
    const t = onTerminal('ivm-c', ['-I', '--headnode', 'hn', '-d', '/root/w', '-l', 'walltime=0:00:20']);
    await see(t, 'the waiting line', (s) => /qsub: waiting for job \d+\.srv to start/.test(s), 30_000);
    const id = /qsub: waiting for job (\S+) to start/.exec(t.screen())![1];
    const seq = id.split('.')[0];
    await see(t, "the clone's prompt", (s) => s.includes(`@hn-${seq}:`), 120_000);
    t.kill();
    await until('the job ended', () => qstat(id).job_state === 'F', 90_000);
    const j = qstat(id);
    expect(j.comment).to.match(/walltime/);
    expect(clonesOf(seq)).to.equal('');
  });

  it("inside the headnode, Ctrl-C while gcqsub -I waits deletes the job (the guest's client)", async function () {
    const r = await inside(`cd /root/w && (sleep 25; printf '\\003'; sleep 6) | script -qec "gcqsub -I -h" /dev/null; echo "status=$?"`);
    const m = /qsub: waiting for job (\S+) to start/.exec(r.stdout);
    expect(m, r.stdout + r.stderr).to.not.equal(null);
    const id = m![1];
    expect(r.stdout).to.include(`qsub: job ${id} deleted`);
    expect(r.stdout).to.match(/status=130\n$/);
    expect(qstat(id).job_state).to.equal('F');
  });
});
