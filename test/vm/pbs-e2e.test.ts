import { expect } from 'chai';
import { GcdProcess } from '../helpers/gcd-process.js';

/**
 * PBS habits inside a real headnode (QEMU under TCG): the q* names, a script piped into qsub,
 * -S, a job asking more memory than its 512 MiB headnode, and PBS's refusals and exit codes.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

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
    const job = (JSON.parse(st.stdout) as { Jobs: Record<string, Record<string, Record<string, unknown> | string>> }).Jobs[id]!;
    expect(job.Resource_List).to.include({ mem: '2gb', ncpus: 3 });
    expect(job.resources_assigned).to.deep.equal({ mem: '512mb', ncpus: 3 });
    expect(job.Shell_Path_List).to.equal('/bin/bash');
    const full = inside(`qstat -x -f ${id}`);
    expect(full.stdout.split('\n')[0]).to.equal(`Job Id: ${id}`);
    expect(full.stdout).to.match(/\n {4}Resource_List\.mem = 2gb\n/);
    expect(inside('free -m | awk \'/^Mem:/ {print $2}\'').stdout.trim()).to.match(/^(4\d\d|50\d|51\d)$/, 'the headnode keeps its 512 MiB');
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
