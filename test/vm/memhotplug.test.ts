import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadSettings } from '../../src/config/settings.js';
import { GcdProcess } from '../helpers/gcd-process.js';

/**
 * A job is as big as it asks, not as its headnode: real clones of a 512 MiB headnode under
 * TCG, memory above it hot-plugged as DIMMs and vCPUs hot-plugged, as the job sees them.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface QstatJson {
  Jobs: Record<string, { job_state: string; Exit_status?: number; comment?: string; Resource_List?: Record<string, string | number>; resources_assigned?: Record<string, string | number> }>;
}

/** MemTotal in MiB from /proc/meminfo text. */
function memTotalMiB(meminfo: string): number {
  const m = /MemTotal:\s+(\d+) kB/.exec(meminfo);
  if (!m) throw new Error(`no MemTotal in: ${meminfo}`);
  return Number(m[1]) / 1024;
}

describe('memory hot-plug: -l mem above the headnode\'s RAM @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  const inside = (script: string) => g.inHeadnode('hn', script);
  const qstat = (...ids: string[]) => JSON.parse(g.tool('gcqstat', ['-x', '-f', '-F', 'json', ...ids]).stdout) as QstatJson;
  const waitDone = async (id: string) => {
    for (let i = 0; i < 1200; i++) {
      const j = qstat(id).Jobs[id];
      if (j?.job_state === 'F') return j;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`job ${id} did not finish`);
  };
  /** QEMU processes of this gcd other than the headnode's. */
  const cloneQemus = (): string[] => g.processesLeft().split('\n').filter((pid) => {
    if (!pid) return false;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('/clones/');
    } catch {
      return false;
    }
  });

  before(async function () {
    // The host may give clones 4 GiB: the headnode's maxmem, and the refusal's figure.
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_CAPACITY_MEM_MIB: '4096' });
    await g.start();
    g.startHeadnodes([['hn', 'alice']], 512);
  });
  after(async function () {
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    const ramDir = loadSettings(g.env).ramDir;
    await g.cleanup();
    expect(g.processesLeft(), 'no QEMU or helper left').to.equal('');
    expect(() => readdirSync(ramDir), 'no RAM file left').to.throw(/ENOENT/);
  });

  it('a job asking mem=2gb,ncpus=3 sees about 2 GiB and 3 CPUs; its headnode keeps 512 MiB', async function () {
    const before = memTotalMiB(inside('cat /proc/meminfo').stdout);
    // 512 MiB less the kernel's own (~466 measured); slots must not cost the headnode more.
    expect(before).to.be.within(440, 512);
    const sub = inside('mkdir -p /root/w && cd /root/w && gcqsub -N big -l mem=2gb,ncpus=3 -- sh -c "cat /proc/meminfo; free -m; nproc"');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const j = await waitDone(id);
    expect(j.Exit_status, j.comment).to.equal(0);
    expect(j.Resource_List?.mem).to.equal('2gb');
    expect(j.Resource_List?.ncpus).to.equal(3);
    // What the clone really has (gcqstat -f).
    expect(j.resources_assigned).to.include({ mem: '2gb', ncpus: 3 });

    const out = inside(`cat /root/w/big.o${id.split('.')[0]}`).stdout;
    const total = memTotalMiB(out);
    // 2048 MiB less what the kernel keeps for itself (the headnode shows 512 as ~460-480).
    expect(total, out).to.be.within(1900, 2048);
    expect(out).to.match(/^Mem:\s+(19\d\d|20[0-4]\d)\s/m);
    expect(out.trim().split('\n').pop()).to.equal('3');

    // The headnode is as it was: forked memory is never the clone's to keep.
    expect(memTotalMiB(inside('cat /proc/meminfo').stdout)).to.equal(before);
    const clones = join(g.stateDir, 'clones');
    expect(readdirSync(clones), 'clone folder removed').to.deep.equal([]);
    expect(cloneQemus(), 'no clone QEMU left').to.deep.equal([]);
    expect(readdirSync(join(loadSettings(g.env).ramDir, 'snapshots')), 'snapshot RAM released').to.deep.equal([]);
  });

  it('a request above the host is refused at submission with the host\'s figure, and nothing is queued', function () {
    const r = inside('cd / && gcqsub -l mem=8gb -- true');
    expect(r.status).to.not.equal(0);
    expect(r.stderr.trim().split('\n').pop()).to.equal('gcqsub: mem=8gb exceeds the largest host (4gb)');
    expect(Object.keys(qstat().Jobs)).to.have.length(1);
  });
});
