import { expect } from 'chai';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * The crash suite's real-VM case (issue 13): gcd SIGKILLs itself (GC_TEST_CRASH_AT) while a
 * job's command runs in a real clone under TCG. The restarted gcd destroys nothing twice and
 * leaves no orphan: the clone's QEMU died with gcd (or is swept), its folder is gone, the job
 * (-r y) runs again once to its end and its output reaches the headnode.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface QstatJob {
  job_state: string;
  Exit_status?: number;
  comment?: string;
}

describe('crash suite with a real clone: gcd killed while the job runs @vm', function () {
  this.timeout(1_800_000);
  let g: GcdProcess;
  const env = { GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '1000', GC_LOCK_MS: '5000' };

  before(async function () {
    g = new GcdProcess({ ...env, GC_TEST_CRASH_AT: 'run:after-exec' });
    await g.start();
    g.startHeadnodes([['hn', 'alice']], 384);
  });
  after(async function () {
    if (!g) return;
    if (g.proc?.exitCode !== null || g.proc?.signalCode !== null) await g.start().catch(() => undefined);
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    await g.cleanup();
  });

  it('the job runs again once, to its end; no clone QEMU, clone folder or spool is left', async function () {
    // Held first: gcd dies as soon as the command runs, which may be before this call returns.
    const sub = g.inHeadnode('hn', `mkdir -p /root/w && cd /root/w && gcqsub -h -N crashy -r y -- sh -c 'echo ran >> /root/w/runs; sleep 5; echo finished'`);
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    g.tool('gcqrls', [id]); // its answer may be lost with gcd
    const seq = id.split('.')[0];
    await until('gcd killed at run:after-exec', () => g.proc?.signalCode === 'SIGKILL', 900_000);
    await until('redis-server gone', () => !existsSync(join(g.stateDir, 'redis', 'redis.pid')), 30_000);

    // The clone of run 1 must not outlive gcd (its QEMU has gcd's death signal).
    await until(
      'clone QEMU gone',
      () =>
        !g
          .processesLeft()
          .split('\n')
          .some((pid) => pid && cmdline(pid).includes(`j${seq}-r1`)),
      30_000,
    );

    const again = new GcdProcess(env, g.stateDir);
    g.proc = undefined;
    await again.start();
    g = again;
    const done = await until(
      `${id} finished after the restart`,
      () => {
        const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
        const j = r.status === 0 ? (JSON.parse(r.stdout) as { Jobs: Record<string, QstatJob> }).Jobs[id] : undefined;
        return j?.job_state === 'F' ? j : undefined;
      },
      900_000,
    );
    expect(done.Exit_status, done.comment).to.equal(0);
    const out = g.inHeadnode('hn', `cat /root/w/crashy.o${seq}; echo ---; cat /root/w/runs`);
    expect(out.stdout).to.match(/^finished\n---\n(ran\n){1,2}$/);
    // Nothing of either run is left: no clone QEMU, no clone folder, no spool.
    expect(
      g
        .processesLeft()
        .split('\n')
        .filter((pid) => pid && /j\d+-r\d/.test(cmdline(pid))),
    ).to.deep.equal([]);
    const clones = join(g.stateDir, 'clones');
    expect(existsSync(clones) ? readdirSync(clones).filter((d) => d.startsWith(`j${seq}-`)) : []).to.deep.equal([]);
    expect(readdirSync(join(g.stateDir, 'spool'))).to.deep.equal([]);
  });
});

function cmdline(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}
