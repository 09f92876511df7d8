import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * gcqsig -s suspend/resume and gcqrerun with real clone VMs under TCG, one headnode for the
 * file. The jobs write to /shared (the owner's host folder, <stateDir>/shared/alice), so the
 * test sees a clone's progress from the host while the clone runs.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface JsonJob {
  job_state: string;
  Exit_status?: number;
  comment?: string;
  run_count?: number;
}

describe('gcqsig suspend/resume and gcqrerun with real clones @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  const inside = (script: string) => g.inHeadnode('hn', script);
  const shared = (f: string) => join(g.stateDir, 'shared', 'alice', f);
  const job = (id: string): JsonJob => {
    const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
    if (r.status !== 0) throw new Error(`gcqstat: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { Jobs: Record<string, JsonJob> }).Jobs[id];
  };
  const count = (): number => (existsSync(shared('count')) ? Number(readFileSync(shared('count'), 'utf8').trim() || 0) : 0);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000' });
    await g.start();
    g.startHeadnodes([['hn', 'alice']], 384);
    await until('/shared mounted', () => inside('grep -q " /shared fuse.sshfs " /proc/mounts').status === 0, 60_000);
  });
  after(async function () {
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    await g.cleanup();
    expect(g.processesLeft(), 'no QEMU left for this state folder').to.equal('');
  });

  it('gcqsig -s suspend pauses the clone (the count stops, state S); resume continues it', async function () {
    const sub = inside('mkdir -p /root/w && cd /root/w && gcqsub -N counter -l walltime=00:10:00 -- sh -c \'i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo $i > /shared/count; sleep 0.5; done\'');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    await until('counting in the clone', () => count() >= 4, 300_000);
    const s = inside(`gcqsig -s suspend ${id}`);
    expect(s.status, s.stderr).to.equal(0);
    expect(job(id).job_state).to.equal('S');
    await sleep(1500); // a write on its way through sshfs may still land
    const frozen = count();
    await sleep(6000);
    expect(count()).to.equal(frozen, 'the paused clone made no progress');
    expect(job(id).job_state).to.equal('S');
    const r = inside(`gcqsig -s resume ${id}`);
    expect(r.status, r.stderr).to.equal(0);
    expect(job(id).job_state).to.equal('R');
    await until('counting again', () => count() >= frozen + 4, 120_000);
    expect(g.tool('gcqdel', [id]).status).to.equal(0);
    await until('deleted', () => job(id).job_state === 'F', 120_000);
  });

  it('gcqrerun runs the job again from the same snapshot: run_count 2', async function () {
    // marker changes in the headnode after submission: both runs still see the snapshot's v1.
    const sub = inside('cd /root/w && echo v1 > marker && rm -f /shared/runs && gcqsub -N twice -- sh -c \'cat /root/w/marker >> /shared/runs; n=$(wc -l < /shared/runs); [ "$n" -ge 2 ] || sleep 600\' && echo v2 > marker');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    await until('first run', () => existsSync(shared('runs')) && readFileSync(shared('runs'), 'utf8') === 'v1\n', 300_000);
    expect(job(id).run_count).to.equal(1);
    const r = inside(`gcqrerun ${id}`);
    expect(r.status, r.stderr).to.equal(0);
    await until('finished', () => job(id).job_state === 'F', 300_000);
    const j = job(id);
    expect(j.Exit_status, j.comment).to.equal(0);
    expect(j.run_count).to.equal(2);
    expect(readFileSync(shared('runs'), 'utf8')).to.equal('v1\nv1\n', 'both runs cloned the snapshot taken at submission');
  });
});
