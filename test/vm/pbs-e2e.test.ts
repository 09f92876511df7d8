import { expect } from 'chai';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess } from '../helpers/gcd-process.js';

/**
 * PBS parity end to end with real clone VMs under TCG: an array with a throttle, a
 * dependency on it, a quota limit, snapshot-at-submission semantics, and usage in history.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface QstatJson {
  Jobs: Record<string, { job_state: string; Exit_status?: number; comment?: string; resources_used?: Record<string, string | number> }>;
}

describe('arrays, dependencies, quotas and snapshot semantics with real clones @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  const inside = (script: string) => g.inHeadnode('hn', script);
  const qstat = (...ids: string[]) => JSON.parse(g.tool('gcqstat', ['-x', '-t', '-f', '-F', 'json', ...ids]).stdout) as QstatJson;
  const waitDone = async (id: string) => {
    for (let i = 0; i < 600; i++) {
      const j = qstat(id).Jobs[id];
      if (j?.job_state === 'F') return j;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`job ${id} did not finish`);
  };

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000' });
    const cfg = join(g.stateDir, 'config');
    mkdirSync(cfg, { recursive: true });
    writeFileSync(join(cfg, 'quotas.yaml'), 'defaults:\n  max_queued: 6\n  max_running: 2\n');
    await g.start();
    expect(g.tool('gc', ['headnode', 'create', 'hn', '--owner', 'alice', '--mem', '384']).status).to.equal(0);
    const s = g.tool('gc', ['headnode', 'start', 'hn']);
    expect(s.status, s.stderr).to.equal(0);
  });
  after(async function () {
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    await g.cleanup();
  });

  it('a change made in the headnode after gcqsub is not seen by that job; usage is recorded', async function () {
    const sub = inside('mkdir -p /root/w && cd /root/w && echo v1 > marker && gcqsub -N snap -- sh -c "sleep 2; cat /root/w/marker" && echo v2 > marker');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const j = await waitDone(id);
    expect(j.Exit_status).to.equal(0);
    expect(inside(`cat /root/w/snap.o${id.split('.')[0]} /root/w/marker`).stdout).to.equal('v1\nv2\n');
    expect(Number(j.resources_used?.cput === undefined ? -1 : 1)).to.equal(1, 'clone CPU time recorded');
  });

  it('-J 1-3%1 runs each task in its own clone with PBS_ARRAY_INDEX; afterok on the array runs after it', async function () {
    const sub = inside("mkdir -p /root/w && cd /root/w && gcqsub -N arr -J 1-3%1 -- sh -c 'echo task $PBS_ARRAY_INDEX on $(hostname)'");
    expect(sub.status, sub.stderr).to.equal(0);
    const arr = sub.stdout.trim();
    expect(arr).to.match(/^\d+\[\]\.srv$/);
    const seq = arr.split('[')[0];
    const dep = inside(`cd /root/w && gcqsub -N after -W depend=afterok:${arr} -- sh -c 'ls /root/w | grep -c "^arr.o"; true'`);
    expect(dep.status, dep.stderr).to.equal(0);
    const depId = dep.stdout.trim();
    expect(qstat(depId).Jobs[depId].job_state).to.equal('H');
    const arrDone = await waitDone(arr);
    if (arrDone.Exit_status !== 0) {
      const tasks = qstat().Jobs;
      const brief = Object.entries(tasks)
        .map(([id, t]) => `${id} ${t.job_state} ${t.Exit_status ?? '-'} ${t.comment ?? ''}`)
        .join('; ');
      expect.fail(`array ended with ${arrDone.Exit_status}: ${brief}`);
    }
    const outs = inside(`cd /root/w && cat arr.o${seq}.1 arr.o${seq}.2 arr.o${seq}.3`).stdout;
    expect(outs).to.equal(`task 1 on hn-${seq}-1\ntask 2 on hn-${seq}-2\ntask 3 on hn-${seq}-3\n`);
    expect((await waitDone(depId)).Exit_status).to.equal(0);
    // The dependent job ran in a snapshot taken when the array ended: its output had come home.
    expect(inside(`cat /root/w/after.o${depId.split('.')[0]}`).stdout).to.equal('3\n');
  });

  it('a submission over max_queued is refused with the limit named, from inside the headnode', function () {
    const r = inside('cd /root/w && for i in 1 2 3 4 5 6 7; do gcqsub -h -- true || exit $?; done');
    expect(r.status).to.not.equal(0);
    expect(r.stderr.trim().split('\n').pop()).to.equal('gcqsub: would exceed max_queued=6 for user alice (has 6 queued or running, submitting 1)');
  });
});

/**
 * PBS habits inside a real headnode: the q* names, a script piped into qsub, -S, a job asking
 * more memory than its 512 MiB headnode (asked vs assigned), and PBS's refusals and exit codes.
 */
describe('PBS names and options inside a headnode @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  const inside = (script: string, timeoutSec = 600) => g.inHeadnode('pbs-hn', script, timeoutSec);

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000', GC_CAPACITY_NCPUS: '8', GC_CAPACITY_MEM_MIB: '8192' });
    await g.start();
    g.startHeadnodes([['pbs-hn', 'alice']], 512);
  });

  after(async function () {
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', 'pbs-hn']);
    await g.cleanup();
    expect(g.processesLeft(), 'no qemu or helper left running for this state folder').to.equal('');
  });

  it('qsub reads a piped script, runs it under -S, records mem above the headnode and what the clone has', function () {
    const names = inside('for n in qsub qstat qdel qselect qhold qrls qalter gcqselect; do command -v $n; done');
    expect(names.stdout.trim().split('\n')).to.have.length(8);
    const sub = inside(
      "mkdir -p /root/w && cd /root/w && printf '#PBS -N piped\\n#PBS -l mem=2gb,ncpus=3\\necho bash=${BASH_VERSION:+yes} cpus=$(nproc) ncpus=$NCPUS\\n' | qsub -S /bin/bash -W block=true",
    );
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    expect(id).to.match(/^\d+\.srv$/);
    const seq = id.split('.')[0];
    expect(inside(`cat /root/w/piped.o${seq}`).stdout).to.equal('bash=yes cpus=3 ncpus=3\n');
    const st = inside(`qstat -x -f -F json ${id}`);
    expect(st.status, st.stderr).to.equal(0);
    const job = (JSON.parse(st.stdout) as { Jobs: Record<string, Record<string, Record<string, unknown> | string>> }).Jobs[id];
    expect(job.Resource_List).to.include({ mem: '2gb', ncpus: 3 });
    expect(job.resources_assigned, 'the clone got the 2gb hot-plugged').to.deep.equal({ mem: '2gb', ncpus: 3 });
    expect(job.Shell_Path_List).to.equal('/bin/bash');
    const full = inside(`qstat -x -f ${id}`);
    expect(full.stdout.split('\n')[0]).to.equal(`Job Id: ${id}`);
    expect(full.stdout).to.match(/\n {4}Resource_List\.mem = 2gb\n/);
    expect(inside("free -m | awk '/^Mem:/ {print $2}'").stdout.trim()).to.match(/^(4\d\d|50\d|51\d)$/, 'the headnode keeps its 512 MiB');
  });

  it('refuses as PBS does: a request above the host, an unknown id (153); qselect prints ids', function () {
    const big = inside('qsub -l mem=64gb -- true; echo rc=$?');
    expect(big.stderr).to.equal('qsub: mem=64gb exceeds the largest host (8gb)\n');
    expect(big.stdout).to.equal('rc=2\n');
    const unknown = inside('qstat 999; echo rc=$?');
    expect(unknown.stderr).to.equal('qstat: Unknown Job Id 999\n');
    expect(unknown.stdout).to.equal('rc=153\n');
    const held = inside('cd /root/w && qsub -h -N sel -- true').stdout.trim();
    expect(inside('qselect -s H -N sel').stdout).to.equal(`${held}\n`);
    expect(inside(`qdel ${held}; echo rc=$?`).stdout).to.equal('rc=0\n');
  });
});
