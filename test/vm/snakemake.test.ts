import { expect } from 'chai';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * A real workflow manager submitting through qsub inside a real headnode: Debian's snakemake
 * (7.21, put in the image by GC_IMAGE_PACKAGES), generic cluster mode. Snakemake writes a job
 * script per rule into .snakemake/tmp.*, runs `qsub ... SCRIPT`, takes qsub's stdout as the job
 * id, and then either watches the marker files the job script touches (they reach the headnode
 * with the job's stage-out) or asks a status script built on `qstat -x -f -F json` (as the PBS
 * Pro profiles do). Each job re-runs snakemake in its clone, which writes .snakemake metadata
 * while the headnode's snakemake writes there too.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';
const HN = 'wf-hn';

/** Samples (config samples=a,b,c) scattered into a job each, gathered by one more; each writes its hostname. */
const SNAKEFILE = `SAMPLES = str(config.get("samples", "a,b,c")).split(",")
localrules: all
rule all:
    input: "gathered.txt"
rule scatter:
    output: "out/{s}.txt"
    shell: "echo {wildcards.s} $(hostname) > {output}"
rule gather:
    input: expand("out/{s}.txt", s=SAMPLES)
    output: "gathered.txt"
    shell: "cat {input} > {output}; hostname >> {output}"
rule boom:
    output: "boom.txt"
    shell: "echo partial > {output}; exit 3"
`;

/** --cluster-status: PBS Pro's finished-job view (qstat -x) and its JSON, as common profiles read it. */
const STATUS_PY = `#!/usr/bin/python3
import json, subprocess, sys
jobid = sys.argv[1]
r = subprocess.run(["qstat", "-x", "-f", "-F", "json", jobid], capture_output=True, text=True)
if r.returncode != 0:
    print("failed" if "Unknown Job Id" in r.stderr else "running")
    sys.exit(0)
job = json.loads(r.stdout)["Jobs"][jobid]
if job["job_state"] != "F":
    print("running")
else:
    print("success" if job.get("Exit_status") == 0 else "failed")
`;

interface QstatJob {
  job_state: string;
  Job_Name?: string;
  Exit_status?: number;
  comment?: string;
}

describe('snakemake --cluster qsub inside a headnode @vm', function () {
  this.timeout(1_800_000);
  let g: GcdProcess;
  const inside = (script: string, timeoutSec = 900) => g.inHeadnode(HN, script, timeoutSec);
  const jobs = (): Record<string, QstatJob> => {
    const r = inside('qstat -x -f -F json');
    expect(r.status, r.stderr).to.equal(0);
    return (JSON.parse(r.stdout) as { Jobs?: Record<string, QstatJob> }).Jobs ?? {};
  };
  const cloneDirs = () => {
    const d = join(g.stateDir, 'clones');
    return existsSync(d) ? readdirSync(d) : [];
  };

  before(async function () {
    g = new GcdProcess({
      GC_IMAGE_DIR: IMAGE_DIR,
      GC_IMAGE_PACKAGES: 'snakemake',
      GC_SERVER_NAME: 'srv',
      GC_KILL_DELAY_MS: '2000',
      GC_CAPACITY_NCPUS: '8',
      GC_CAPACITY_MEM_MIB: '8192',
    });
    await g.start();
    const t = Date.now();
    g.startHeadnodes([[HN, 'alice']], 512);
    console.log(`      headnode up in ${((Date.now() - t) / 1000).toFixed(0)} s`);
    const w = inside(
      `mkdir -p /root/wf && cd /root/wf && cat > Snakefile <<'EOF'\n${SNAKEFILE}EOF\ncat > status.py <<'EOF'\n${STATUS_PY}EOF\nchmod +x status.py`,
    );
    expect(w.status, w.stderr).to.equal(0);
  });

  after(async function () {
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', HN]);
    await g.cleanup();
    expect(g.processesLeft(), 'no qemu or helper left running for this state folder').to.equal('');
  });

  it('the PBS names qsig, qrerun and qmove are there too, and speak as PBS', function () {
    const r = inside('{ qsig 999.srv; echo "qsig rc=$?"; qrerun 999.srv; echo "qrerun rc=$?"; qmove workq 999.srv; echo "qmove rc=$?"; } 2>&1');
    for (const n of ['qsig', 'qrerun', 'qmove']) expect(r.stdout, r.stdout).to.match(new RegExp(`^${n}: .*\\n${n} rc=[1-9]\\d*$`, 'm'));
  });

  /** Runs the workflow with `flags`; checks outputs, clones, job states and leftovers; returns seconds. */
  async function runWorkflow(flags: string, samples: string[]): Promise<number> {
    const before = new Set(Object.keys(jobs()));
    inside('cd /root/wf && rm -rf out gathered.txt snakejob.* .snakemake');
    const t = Date.now();
    const run = inside(
      `cd /root/wf && snakemake ${flags} --config samples=${samples.join(',')} --jobs 3 --latency-wait 60 > sm.log 2>&1; echo rc=$?; tail -n 30 sm.log`,
    );
    const secs = (Date.now() - t) / 1000;
    expect(run.stdout.split('\n')[0], run.stdout + run.stderr).to.equal('rc=0');

    // One job per sample and the gather went through qsub, and all ended well.
    const ours = await until(
      'the jobs to be F',
      () => {
        const all = Object.entries(jobs()).filter(([id]) => !before.has(id));
        return all.length === samples.length + 1 && all.every(([, j]) => j.job_state === 'F') ? all : undefined;
      },
      120_000,
    );
    for (const [id, j] of ours) expect(j.Exit_status, `${id} ${j.comment ?? ''}`).to.equal(0);
    const names = ours.map(([, j]) => (j.Job_Name ?? '').replace(/\.\d+\.sh$/, '')).sort();
    expect(names).to.deep.equal(['snakejob.gather', ...samples.map(() => 'snakejob.scatter')]);

    // Each rule ran in its own clone (hostname HN-<seq>), and its output came home.
    const seqs = ours.map(([id]) => id.split('.')[0]);
    const outs = inside(`cd /root/wf && cat ${samples.map((x) => `out/${x}.txt`).join(' ')}; echo ---; cat gathered.txt`).stdout;
    const [scattered, gathered] = outs.split('---\n');
    const lines = scattered.trim().split('\n');
    expect(lines.map((l) => l.split(' ')[0])).to.deep.equal(samples);
    const hosts = lines.map((l) => l.split(' ')[1]);
    for (const h of hosts) expect(h).to.match(new RegExp(`^${HN}-(${seqs.join('|')})$`), outs);
    expect(new Set(hosts).size, 'a clone per sample').to.equal(samples.length);
    const gLines = gathered.trim().split('\n');
    expect(gLines.slice(0, samples.length)).to.deep.equal(lines);
    expect(gLines[samples.length]).to.match(new RegExp(`^${HN}-(${seqs.join('|')})$`));
    expect(hosts).to.not.include(gLines[samples.length]);

    // Nothing left: no clone, no stage-out conflict copy, no snakemake job folder; and
    // snakemake, asked again, finds the workflow complete (no file marked incomplete).
    await until('the clones to be destroyed', () => cloneDirs().length === 0, 60_000);
    expect(inside("cd /root/wf && find . -name '*.copper-*'; ls -d .snakemake/tmp.* 2>/dev/null; true").stdout).to.equal('');
    const again = inside(`cd /root/wf && snakemake -n --config samples=${samples.join(',')} --jobs 1 2>&1; echo rc=$?`);
    expect(again.stdout, again.stdout).to.contain('Nothing to be done');
    expect(again.stdout.trim().split('\n').pop()).to.equal('rc=0');
    return secs;
  }

  it('marker files: the scatter and gather jobs run in clones and the workflow completes', async function () {
    const secs = await runWorkflow('--cluster "qsub -l walltime=00:10:00"', ['a', 'b', 'c']);
    console.log(`      snakemake --cluster qsub, 3+1 jobs: ${secs.toFixed(0)} s`);
  });

  // One sample only: every snakemake run costs minutes under TCG (see the figures printed).
  it('--cluster-status with qstat -x -f -F json: a scatter and a gather complete', async function () {
    const secs = await runWorkflow('--cluster "qsub -l walltime=00:10:00" --cluster-status ./status.py', ['a']);
    console.log(`      snakemake --cluster qsub --cluster-status, 1+1 jobs: ${secs.toFixed(0)} s`);
  });

  it('a failing rule: snakemake names the Copper job, exits 1; the job is F with status 1, nothing left', async function () {
    const before = new Set(Object.keys(jobs()));
    const run = inside(
      'cd /root/wf && rm -rf .snakemake && snakemake boom.txt --cluster "qsub" --jobs 1 --latency-wait 10 > sm.log 2>&1; echo rc=$?; cat sm.log',
    );
    expect(run.stdout.split('\n')[0], run.stdout).to.equal('rc=1');
    const ours = await until(
      'the job to be F',
      () => {
        const all = Object.entries(jobs()).filter(([id]) => !before.has(id));
        return all.length === 1 && all[0][1].job_state === 'F' ? all[0] : undefined;
      },
      120_000,
    );
    const [id, job] = ours;
    expect(job.Exit_status, job.comment).to.equal(1);
    expect(run.stdout).to.contain('Error in rule boom:');
    expect(run.stdout).to.match(new RegExp(`cluster_jobid: ${id.replace('.', '\\.')}\\b`));
    // The rule's own failure (not snakemake's in the clone), in the job's stderr file.
    const seq = id.split('.')[0];
    const jobErr = inside(`cat /root/wf/snakejob.boom.*.sh.e${seq}`).stdout;
    expect(jobErr, jobErr).to.contain('Error in rule boom:').and.contain('one of the commands exited with non-zero exit code');
    await until('the clone to be destroyed', () => cloneDirs().length === 0, 60_000);
    // The partial output of the failed rule is not left looking complete.
    expect(inside("cd /root/wf && ls boom.txt 2>&1; find . -name '*.copper-*'; ls -d .snakemake/tmp.* 2>/dev/null; true").stdout).to.equal(
      "ls: cannot access 'boom.txt': No such file or directory\n",
    );
  });
});
