import { expect } from 'chai';
import { hostname as osHostname } from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * Watching and entering a running job with real clone VMs under TCG: gcqpeek -f prints a
 * job's lines while it runs (host and guest clients), gcqstat shows where it runs and what it
 * has used so far, gcqexec runs a command in the job's own clone and is refused to another user.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface QstatJson {
  Jobs: Record<string, { job_state: string; exec_host?: string; Exit_status?: number; resources_used?: Record<string, string | number> }>;
}

/** A tool run as a process, with the time each piece of its stdout arrived. */
function followed(g: GcdProcess, tool: string, args: string[]): Promise<{ chunks: Array<{ at: number; text: string }>; stderr: string; status: number }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [join(BIN, `${tool}.js`), ...args], { env: g.env, cwd: g.stateDir });
    const chunks: Array<{ at: number; text: string }> = [];
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => chunks.push({ at: Date.now(), text: d.toString() }));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => res({ chunks, stderr, status: code ?? -1 }));
  });
}

describe('gcqpeek, gcqexec and live gcqstat with real clones @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  const qstat = (...ids: string[]) => JSON.parse(g.tool('gcqstat', ['-x', '-f', '-F', 'json', ...ids]).stdout) as QstatJson;
  /** A shell command in a headnode, without blocking this process (followers keep reading). */
  const inside = (hn: string, script: string) => g.toolAsync('gc', ['headnode', 'exec', hn, '--timeout', '600', '--', 'sh', '-c', script]);

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000' });
    await g.start();
    g.startHeadnodes(
      [
        ['hn', 'alice'],
        ['hn2', 'bob'],
      ],
      384,
    );
  });
  after(async function () {
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    g.tool('gc', ['headnode', 'destroy', 'hn2']);
    await g.cleanup();
  });

  it("follows a job's output while it runs, shows exec_host and live usage, enters its clone, refuses another user", async function () {
    const ticks = 30;
    const sub = await inside(
      'hn',
      `mkdir -p /root/w && cd /root/w && gcqsub -N tick -- sh -c 'i=1; while [ $i -le ${ticks} ]; do echo tick $i; i=$((i+1)); sleep 1; done'`,
    );
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const seq = id.split('.')[0];

    // Followers from the start (the job is still queued): the host's client and the guest's.
    const host = followed(g, 'gcqpeek', ['-f', id]);
    const guest = inside('hn', `gcqpeek -f ${id} | while IFS= read -r l; do echo "$(date +%s) $l"; done`);

    await until('job running', () => qstat(id).Jobs[id]?.job_state === 'R', 300_000);
    await until('a first line', async () => (await g.toolAsync('gcqpeek', [id])).stdout.startsWith('tick 1\n'), 120_000);

    // Where it runs and what it has used so far, while it runs.
    const full = (await g.toolAsync('gcqstat', ['-f', id])).stdout;
    // exec_host: the compute host (GC_NODE_NAME: the host name); exec_vnode: the clone, named as its hostname.
    expect(full).to.include(`    exec_host = ${osHostname().split('.')[0]}/0\n`);
    expect(full).to.match(new RegExp(`\\n    exec_vnode = \\(hn-${seq}:ncpus=1:mem=\\d+kb\\)\\n`));
    const live = qstat(id).Jobs[id];
    expect(live.job_state).to.equal('R');
    expect(live.exec_host).to.equal(`${osHostname().split('.')[0]}/0`);
    expect(live.resources_used?.walltime)
      .to.match(/^\d\d:\d\d:\d\d$/)
      .and.not.equal('00:00:00');
    // CPU time and memory of the clone, sampled while it runs (every 5 s).
    await until('a usage sample', () => qstat(id).Jobs[id]?.resources_used?.cput !== undefined, 30_000);
    expect(String(qstat(id).Jobs[id].resources_used!.mem)).to.match(/^[1-9]\d*kb$/);

    // gcqexec runs in that job's clone, as its account, in its directory, with its environment.
    const hostname = await g.toolAsync('gcqexec', [id, '--', 'hostname']);
    expect([hostname.stdout, hostname.status], hostname.stderr).to.deep.equal([`hn-${seq}\n`, 0]);
    const where = await inside('hn', `gcqexec ${id} -- sh -c 'pwd; id -un; echo "$PBS_JOBID"; exit 4'; echo "status=$?"`);
    expect(where.stdout, where.stderr).to.equal(`/root/w\nroot\n${id}\nstatus=4\n`);

    // Another user's headnode: the job is unknown there, as PBS says, with its exit status.
    const bob = await inside('hn2', `gcqexec ${id} -- hostname; echo "status=$?"; gcqpeek ${id}; echo "status=$?"`);
    expect(bob.stdout).to.equal('status=153\nstatus=153\n');
    expect(bob.stderr).to.equal(`gcqexec: Unknown Job Id ${id}\ngcqpeek: Unknown Job Id ${id}\n`);

    const h = await host;
    expect(h.status, h.stderr).to.equal(0);
    const want = Array.from({ length: ticks }, (_, i) => `tick ${i + 1}\n`).join('');
    expect(h.chunks.map((c) => c.text).join('')).to.equal(want);
    // Printed as the job ran: many pieces, spread over most of its run.
    expect(h.chunks.length).to.be.greaterThan(5);
    expect(h.chunks[h.chunks.length - 1].at - h.chunks[0].at).to.be.greaterThan(10_000);

    const gst = await guest;
    expect(gst.status, gst.stderr).to.equal(0);
    const lines = gst.stdout
      .trim()
      .split('\n')
      .map((l) => /^(\d+) (.*)$/.exec(l)!);
    expect(lines.map((m) => `${m[2]}\n`).join('')).to.equal(want);
    expect(Number(lines[lines.length - 1][1]) - Number(lines[0][1])).to.be.greaterThan(10);

    const done = qstat(id).Jobs[id];
    await until('job finished', () => qstat(id).Jobs[id]?.job_state === 'F', 120_000);
    expect(done.exec_host).to.equal(`${osHostname().split('.')[0]}/0`);
    // Once it ended: nothing to enter.
    const after = await g.toolAsync('gcqexec', [id, '--', 'true']);
    expect([after.stderr, after.status]).to.deep.equal([`gcqexec: Request invalid for state of job ${id} (F): it is not running\n`, 1]);
  });

  it("gcqexec ID alone opens a login shell in the job's clone on the caller's terminal (driven through tmux)", async function () {
    const sub = await inside('hn', 'mkdir -p /root/w && cd /root/w && gcqsub -N long -- sleep 600');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const seq = id.split('.')[0];
    await until('job running', () => qstat(id).Jobs[id]?.job_state === 'R', 300_000);
    // Its command must be running before a shell may join it.
    await until('job command started', async () => (await g.toolAsync('gcqexec', [id, '--', 'true'])).status === 0, 120_000);

    const sock = `copper-we-${process.pid}`;
    const tmux = (...args: string[]) => spawnSync('tmux', ['-L', sock, ...args], { encoding: 'utf8' });
    const envs = ['GC_STATE_DIR', 'GC_IMAGE_DIR', 'GC_SERVER_NAME'].map((k) => `${k}=${g.env[k] ?? ''}`).join(' ');
    const cmd = `env ${envs} ${process.execPath} ${join(BIN, 'gcqexec.js')} ${id}; echo EXITED=$?; sleep 600`;
    expect(tmux('new-session', '-d', '-s', 'we', '-x', '120', '-y', '30', cmd).status).to.equal(0);
    const screen = () => tmux('capture-pane', '-p', '-t', 'we').stdout;
    try {
      await until("the clone's prompt", () => screen().includes(`@hn-${seq}:`), 120_000).catch((e: Error) => {
        throw new Error(`${e.message}\n${screen()}`);
      });
      tmux('send-keys', '-t', 'we', 'echo "in $(hostname) at $(pwd): $((6*7))"', 'Enter');
      await until("a command's output", () => screen().includes(`in hn-${seq} at /root/w: 42`), 60_000).catch((e: Error) => {
        throw new Error(`${e.message}\n${screen()}`);
      });
      tmux('send-keys', '-t', 'we', 'exit 3', 'Enter');
      await until('the shell ended', () => screen().includes('EXITED=3'), 60_000).catch((e: Error) => {
        throw new Error(`${e.message}\n${screen()}`);
      });
    } finally {
      tmux('kill-server');
      // kill-server leaves its socket file behind.
      rmSync(join(process.env.TMUX_TMPDIR ?? '/tmp', `tmux-${process.getuid?.() ?? 0}`, sock), { force: true });
    }
    // The same from inside the headnode: the guest's client on a pseudo-terminal (script(1)).
    const typed = `(sleep 20; printf 'echo "in $(hostname) at $(pwd): $((6*7))"\\r'; sleep 20; printf 'exit 5\\r'; sleep 30)`;
    const fromGuest = await inside('hn', `cd /tmp && ${typed} | script -qec "gcqexec ${id}" /dev/null; echo "status=$?"`);
    expect(fromGuest.stdout).to.include(`@hn-${seq}:`);
    expect(fromGuest.stdout).to.include(`in hn-${seq} at /root/w: 42`);
    expect(fromGuest.stdout).to.match(/status=5\n$/);

    // The shell and its bridge are gone from the clone; the job itself runs on.
    const left = await g.toolAsync('gcqexec', [id, '--', 'sh', '-c', 'ls /run/copper | grep -c "^tty-"; pgrep -fc "[i]mport fcntl"; true']);
    expect(left.stdout).to.equal('0\n0\n');
    expect(qstat(id).Jobs[id].job_state).to.equal('R');
    expect(g.tool('gcqdel', [id]).status).to.equal(0);
    await until('job finished', () => qstat(id).Jobs[id]?.job_state === 'F', 120_000);
  });
});
