import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * The job's own usage, measured in its clone (a cgroup v2 per job), reaches the accounting
 * file and gcseff; an out-of-memory kill is said in plain words with the peak and the limit.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface QstatJson {
  Jobs: Record<string, { job_state: string; Exit_status?: number; comment?: string }>;
}

/** An E record's key=value fields, split as PBS's readers split them. */
async function endRecord(stateDir: string, id: string): Promise<Record<string, string>> {
  const dir = join(stateDir, 'accounting');
  // Written just after the job shows F (the record first, then its observers).
  const line = await until(`E record of ${id}`, () =>
    readdirSync(dir)
      .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n'))
      .find((l) => l.split(';')[1] === 'E' && l.split(';')[2] === id),
  );
  return Object.fromEntries(line.split(';').slice(3).join(';').split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

const hmsSec = (t: string): number => t.split(':').reduce((a, x) => a * 60 + Number(x), 0);

describe('per-job usage from the clone\'s cgroup, accounting and OOM in plain words @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  const inside = (script: string) => g.inHeadnode('hn', script);
  const waitDone = async (id: string) => {
    for (let i = 0; i < 600; i++) {
      const j = (JSON.parse(g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]).stdout) as QstatJson).Jobs[id];
      if (j?.job_state === 'F') return j;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`job ${id} did not finish`);
  };

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000' });
    await g.start();
    g.startHeadnodes([['hn', 'alice']], 384);
  });
  after(async function () {
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    await g.cleanup();
  });

  it('a CPU-bound job: its own CPU time and peak memory in the E record and in gcseff', async function () {
    const sub = inside('mkdir -p /root/w && cd /root/w && gcqsub -N burn -- timeout 4 sh -c "while :; do :; done"');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    await waitDone(id);
    const e = await endRecord(g.stateDir, id);
    expect(e.user).to.equal('alice');
    const cput = hmsSec(e['resources_used.cput']!);
    const wall = hmsSec(e['resources_used.walltime']!);
    // timeout 4: about 4 s of the job's own CPU (the clone's boot and agent are not in its cgroup).
    expect(cput, `cput ${e['resources_used.cput']} walltime ${e['resources_used.walltime']}`).to.be.within(3, 5);
    expect(cput).to.be.at.most(wall + 1);
    const memKb = Number(/^(\d+)kb$/.exec(e['resources_used.mem']!)?.[1]);
    // A shell loop: a few MiB, far below the clone's RAM (the VM's own would be ~100 MiB and more).
    expect(memKb).to.be.within(100, 64 * 1024);
    console.log(`      burn: cput ${e['resources_used.cput']} walltime ${e['resources_used.walltime']} mem ${e['resources_used.mem']}`);
    // The owner asks from inside the headnode, as users do.
    const eff = inside(`gcseff ${id}`);
    expect(eff.status, eff.stderr).to.equal(0);
    const trace = inside(`gctracejob ${id}`);
    expect(trace.status, trace.stderr).to.equal(0);
    expect([...trace.stdout.matchAll(/ A {4}([QSE]) /g)].map((m) => m[1]).join('')).to.equal('QSE');
    expect(eff.stdout).to.match(/CPU Efficiency: \d+\.\d\d% of \d\d:\d\d:\d\d core-walltime/);
    expect(eff.stdout).to.match(/Memory Efficiency: \d+\.\d\d% of 384\.00 MB/);
  });

  it('a job that runs out of memory ends with "out of memory", its peak and the clone\'s RAM', async function () {
    // tail keeps a line without newline whole: it grows until the kernel's OOM killer stops it.
    const sub = inside('cd /root/w && gcqsub -N oom -- sh -c "head -c 2000M /dev/zero | tail >/dev/null"');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const j = await waitDone(id);
    expect(j.Exit_status).to.not.equal(0);
    // The OOM killer may end the shell or only tail (then the shell exits 137): both say it.
    expect(j.comment).to.match(/out of memory.* \(peak \d+ MiB of the clone's 384 MiB of RAM\)/);
    expect(j.comment).to.not.contain('signal 9');
    console.log(`      oom: Exit_status ${j.Exit_status}, comment: ${j.comment}`);
    const peak = Number(/peak (\d+) MiB/.exec(j.comment!)![1]);
    expect(peak).to.be.within(150, 384);
  });
});
