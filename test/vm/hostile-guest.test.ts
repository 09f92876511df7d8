import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * Issue 13 items 3 and 4 with real clones under TCG: a job is root in its clone, so it can
 * point its own .stdout at /dev/zero, write a huge .pgid, or stop the guest agent. gcd must
 * survive each, end the attacker's job with a reason, destroy its clone, and keep running
 * other jobs; gcqdel and gcd's SIGTERM must work on a clone whose agent does not answer.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';
const KILL_DELAY_MS = 1000;
const GUEST_DEADLINE_MS = 5000;

interface QstatJob {
  job_state: string;
  Exit_status?: number;
  comment?: string;
}

/**
 * Stop the guest agent of this clone (root may), then say so on the serial console and sleep.
 * Shell builtins only: a fork per process under TCG on a loaded host outlasts a short walltime.
 */
const STOP_AGENT =
  'for p in /proc/[0-9]*; do read c < $p/comm 2>/dev/null && [ "$c" = qemu-ga ] && kill -STOP ${p#/proc/}; done; echo copper-agent-stopped > /dev/ttyS0; sleep 600';
describe('hostile guests: files, agent and deadlines in real clones @vm', function () {
  this.timeout(1_200_000);
  let g: GcdProcess;
  const inside = (script: string) => g.inHeadnode('hn', script);
  const qstat = (id: string): QstatJob | undefined => {
    const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
    return r.status === 0 ? (JSON.parse(r.stdout) as { Jobs: Record<string, QstatJob> }).Jobs[id] : undefined;
  };
  const waitDone = (id: string, ms = 600_000): Promise<QstatJob> => until(`job ${id} F`, () => (qstat(id)?.job_state === 'F' ? qstat(id) : undefined), ms);
  const submit = (args: string): string => {
    const r = inside(`mkdir -p /root/w && cd /root/w && gcqsub ${args}`);
    expect(r.status, r.stderr).to.equal(0);
    return r.stdout.trim();
  };
  const cloneDir = (id: string) => join(g.stateDir, 'clones', `j${id.split('.')[0]}-r1`);
  /** The job's command has run its STOP_AGENT line (the clone's serial console says so). */
  const agentStopped = (id: string) =>
    until(
      `agent stopped in ${id}`,
      () => {
        const f = join(cloneDir(id), 'console.log');
        return existsSync(f) && readFileSync(f, 'utf8').includes('copper-agent-stopped');
      },
      600_000,
    );

  before(async function () {
    g = new GcdProcess({
      GC_IMAGE_DIR: IMAGE_DIR,
      GC_SERVER_NAME: 'srv',
      GC_KILL_DELAY_MS: String(KILL_DELAY_MS),
      GC_GUEST_DEADLINE_MS: String(GUEST_DEADLINE_MS),
      GC_MAX_OUTPUT_MIB: '4',
    });
    await g.start();
    g.startHeadnodes([['hn', 'alice']], 384);
  });
  after(async function () {
    if (!g) return;
    if (g.proc?.exitCode !== null) await g.start().catch(() => undefined);
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    await g.cleanup();
  });

  it('.stdout made a link to /dev/zero: output cut at GC_MAX_OUTPUT_MIB, the comment says so; a huge .pgid cannot stop the walltime kill', async function () {
    const zero = submit(`-N zero -- sh -c 'for f in /run/copper/*.stdout; do ln -sf /dev/zero "$f"; done; echo never-seen'`);
    // run-job writes .pgid just after the command starts: wait for it, then overwrite it.
    const pgid = submit(
      `-N pgid -l walltime=00:00:20 -- sh -c 'until ls /run/copper/*.pgid >/dev/null 2>&1; do sleep 0.2; done; sleep 1; for f in /run/copper/*.pgid; do yes 1 | head -c 3000000 > "$f"; done; sleep 600'`,
    );
    const ok = submit(`-N fine -- sh -c 'echo still-served'`);

    const z = await waitDone(zero);
    expect(z.Exit_status, z.comment).to.equal(0);
    expect(z.comment).to.match(/stdout cut: .*over 4194304 bytes/);
    const size = inside(`stat -c %s /root/w/zero.o${zero.split('.')[0]}`);
    expect(size.stdout.trim()).to.equal(String(4 * 1024 * 1024));

    const p = await waitDone(pgid);
    expect(p.Exit_status, p.comment).to.equal(-29); // PBS: JOB_EXEC_KILL_WALLTIME
    expect(p.comment)
      .to.match(/walltime 20s exceeded/)
      .and.match(/over 64 bytes/)
      .and.match(/its VM was killed/);
    expect(existsSync(cloneDir(pgid)), 'the clone is destroyed').to.equal(false);

    const f = await waitDone(ok);
    expect(f.Exit_status, f.comment).to.equal(0);
    expect(inside(`cat /root/w/fine.o${ok.split('.')[0]}`).stdout).to.equal('still-served\n');
  });

  it('a job that stops its guest agent ends by the host-side deadline after its walltime; gcqdel ends another', async function () {
    const wall = submit(`-N stopwall -l walltime=00:00:20 -- sh -c '${STOP_AGENT}'`);
    const del = submit(`-N stopdel -- sh -c '${STOP_AGENT}'`);
    await agentStopped(wall);
    const t0 = Date.now();
    const w = await waitDone(wall, 120_000);
    // Walltime (20 s, counted from the start, so at most 20 s from here) + kill delay + deadline, + slack for a loaded host.
    expect(Date.now() - t0).to.be.below(20_000 + KILL_DELAY_MS + GUEST_DEADLINE_MS + 20_000);
    expect(w.Exit_status, w.comment).to.equal(-29);
    expect(w.comment)
      .to.match(/walltime 20s exceeded/)
      .and.match(/its VM was killed/);
    expect(existsSync(cloneDir(wall))).to.equal(false);

    await agentStopped(del);
    const t1 = Date.now();
    const d = g.tool('gcqdel', [del]);
    expect(d.status, d.stderr).to.equal(0);
    const dj = await waitDone(del, 120_000);
    expect(Date.now() - t1).to.be.below(KILL_DELAY_MS + GUEST_DEADLINE_MS + 20_000);
    expect(dj.comment).to.match(/deleted by gcqdel/);
    expect(existsSync(cloneDir(del))).to.equal(false);
  });

  it("gcd SIGTERM returns within its bound while a clone's agent is stopped; the clone is gone", async function () {
    const id = submit(`-N stopterm -r n -- sh -c '${STOP_AGENT}'`);
    await agentStopped(id);
    const pidFile = join(cloneDir(id), 'qemu.pid');
    const qemuPid = Number(readFileSync(pidFile, 'utf8').trim());
    const t0 = Date.now();
    await g.stop();
    expect(Date.now() - t0).to.be.below(KILL_DELAY_MS + GUEST_DEADLINE_MS + 30_000);
    let alive = true;
    try {
      process.kill(qemuPid, 0);
    } catch {
      alive = false;
    }
    expect(alive, 'the clone QEMU is gone').to.equal(false);
    await g.start();
    const j = await waitDone(id, 60_000);
    expect(j.comment).to.match(/gcd shut down|gcd stopped/);
  });
});
