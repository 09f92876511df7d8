/**
 * Workflow managers that drive PBS, replayed against Copper's PBS names: each test runs the
 * exact command lines one tool runs (read from that project's source, named in each test) and
 * parses the answers the way that tool does, reimplemented minimally here. A tool that would
 * misread Copper's answer fails its test.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until as untilBare } from '../helpers/gcd-process.js';

/** `until`, saying what the queue looked like when it timed out. */
async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 30_000, state?: () => string): Promise<T> {
  try {
    return await untilBare(what, fn, ms);
  } catch (e) {
    throw new Error(`${(e as Error).message}${state ? `\n${state()}` : ''}`, { cause: e });
  }
}

interface Shell {
  stdout: string;
  stderr: string;
  status: number;
}

describe('workflow tools drive Copper through the PBS names (test-double driver)', function () {
  let g: GcdProcess;
  let pbsBin: string;
  let wd: string;
  /** Where a headnode path lands on the host (the test double's headnode folder). */
  const inHn = (p: string) => join(g.stateDir, 'fake-headnodes', 'hn1', p);

  /** A command line as the tool runs it: through a shell, the PBS names first on PATH. */
  function sh(cmd: string, cwd = wd): Shell {
    const r = spawnSync('bash', ['-c', cmd], {
      cwd,
      env: { ...g.env, PATH: `${pbsBin}:${process.env.PATH ?? ''}`, GC_HEADNODE: 'hn1' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    return { stdout: r.stdout, stderr: r.stderr, status: r.status ?? -1 };
  }
  function ok(cmd: string, cwd = wd): string {
    const r = sh(cmd, cwd);
    expect(r.status, `${cmd}: ${r.stderr}`).to.equal(0);
    return r.stdout;
  }
  const script = (name: string, text: string): string => {
    const p = join(wd, name);
    writeFileSync(p, text, { mode: 0o755 });
    return p;
  };

  before(async function () {
    g = new GcdProcess({
      GC_DRIVER: 'fake',
      GC_FAKE_HEADNODES: 'hn1:alice:physics',
      GC_LOCK_MS: '3000',
      GC_KILL_DELAY_MS: '500',
      GC_SERVER_NAME: 'srv',
    });
    await g.start();
    pbsBin = join(g.stateDir, 'pbs-bin');
    const inst = g.tool('gc', ['install-pbs-names', '--prefix', pbsBin]);
    expect(inst.status, inst.stderr).to.equal(0);
    wd = join(g.stateDir, 'work');
    mkdirSync(wd);
  });
  after(async function () {
    sh('qselect | xargs -r qdel');
    await g.cleanup();
  });

  describe('Nextflow (modules/nextflow/src/main/groovy/nextflow/executor/)', function () {
    type QueueStatus = 'DONE' | 'RUNNING' | 'PENDING' | 'HOLD' | 'UNKNOWN';
    const PBS: Record<string, QueueStatus> = { C: 'DONE', R: 'RUNNING', Q: 'PENDING', H: 'HOLD', S: 'HOLD' };
    const PBSPRO: Record<string, QueueStatus> = { ...PBS, F: 'DONE', E: 'RUNNING', U: 'HOLD', W: 'HOLD', T: 'HOLD', M: 'HOLD' };
    delete PBSPRO.C;

    /** PbsExecutor.parseJobId: the trimmed answer, which must be one line. */
    function parseJobId(text: string): string {
      const t = text.trim();
      if (!t || t.includes('\n')) throw new Error(`Invalid PBS/Torque submit response:\n${text}`);
      return t;
    }
    /** PbsExecutor.parseQueueStatus, its line walk kept as it is. */
    function parseQueueStatus(text: string, decode: Record<string, QueueStatus>): Map<string, QueueStatus> {
      const fetch = (prefix: string, line: string): string | undefined => {
        const p = line.indexOf(prefix);
        return p !== -1 ? line.slice(p + prefix.length).trim() : undefined;
      };
      const result = new Map<string, QueueStatus>();
      let id: string | undefined;
      let status: string | undefined;
      // Groovy's eachLine: no empty line after the last newline.
      for (const line of text.replace(/\n$/, '').split('\n')) {
        if (line.startsWith('Job Id:')) id = fetch('Job Id:', line);
        else if (id) status = fetch('job_state =', line);
        if (id) result.set(id, (status && decode[status]) || 'UNKNOWN');
      }
      return result;
    }
    const wrap = (cmd: string) => `bash -c ${JSON.stringify(`set -o pipefail; ${cmd} | { grep -E '(Job Id:|job_state =)' || true; }`)}`;

    it("pbs executor: qsub -N NAME .command.run, polled with 'qstat -f -1 [queue]', killed with qdel", async function () {
      const dir = join(wd, 'nf-pbs');
      mkdirSync(dir);
      writeFileSync(
        join(dir, '.command.run'),
        [
          '#!/bin/bash',
          '#PBS -N nf-say_1',
          `#PBS -o ${dir}/.command.log`,
          '#PBS -j oe',
          '#PBS -l nodes=1:ppn=2',
          '#PBS -l walltime=01:00:00',
          '#PBS -l mem=1gb',
          `NXF_CHDIR=${dir}`,
          'echo out; echo err >&2; sleep 2; echo 0 > .exitcode',
          '',
        ].join('\n'),
      );
      const quick = parseJobId(ok('qsub -N nf-say_1 .command.run', dir));
      writeFileSync(join(dir, '.command.run'), readFileSync(join(dir, '.command.run'), 'utf8').replace('sleep 2', 'sleep 60'));
      const long = parseJobId(ok('qsub -N nf-say_2 .command.run', dir));
      expect(quick).to.match(/^\d+\.srv$/);

      const poll = (cmd: string) => parseQueueStatus(ok(wrap(cmd)), PBS);
      await until(
        'running',
        () => poll('qstat -f -1').get(long) === 'RUNNING',
        30_000,
        () => ok('qstat -x -s'),
      );
      expect(poll('qstat -f -1 workq').get(long)).to.equal('RUNNING');
      // A finished job leaves the list: Nextflow then reads its .exitcode.
      await until('quick job gone from qstat', () => !poll('qstat -f -1').has(quick));
      const log = readFileSync(inHn(join(dir, '.command.log')), 'utf8');
      expect(log).to.contain('out').and.to.contain('err');
      // (The test double runs jobs in the host's folder: what a job writes itself stays there.)
      expect(readFileSync(join(dir, '.exitcode'), 'utf8')).to.equal('0\n');

      ok(`qdel ${long}`);
      await until('killed job gone', () => !poll('qstat -f -1').has(long));
    });

    it("pbspro executor: -l select=1:ncpus=N:mem=Mmb, polled with 'qstat -f @server' (names from qstat -B)", async function () {
      const dir = join(wd, 'nf-pbspro');
      mkdirSync(dir);
      writeFileSync(
        join(dir, '.command.run'),
        [
          '#!/bin/bash',
          '#PBS -N nf-align_1',
          `#PBS -o ${dir}/.command.log`,
          '#PBS -j oe',
          '#PBS -l select=1:ncpus=2:mem=1024mb',
          '#PBS -l walltime=01:00:00',
          'sleep 60',
          '',
        ].join('\n'),
      );
      const id = parseJobId(ok('qsub -N nf-align_1 .command.run', dir));
      const servers = "$( qstat -B | grep -E -v '(^Server|^---)' | awk -v ORS=' ' '{print \"@\"$1}' )";
      const poll = () => parseQueueStatus(ok(wrap(`qstat -f ${servers}`)), PBSPRO);
      await until(
        'running',
        () => poll().get(id) === 'RUNNING',
        30_000,
        () => ok('qstat -x -s'),
      );
      expect(parseQueueStatus(ok(wrap('qstat -f workq')), PBSPRO).get(id)).to.equal('RUNNING');
      const full = ok(`qstat -f ${id}`);
      expect(full).to.match(/Resource_List\.ncpus = 2/);
      ok(`qdel ${id}`);
      await until('gone', () => !poll().has(id));
    });
  });

  it('dask-jobqueue PBSCluster (dask_jobqueue/pbs.py, core.py): #PBS header, job id by \\d+, qdel SHORT-ID', async function () {
    const logs = join(wd, 'dask-logs');
    mkdirSync(logs);
    const path = script(
      'tmpdask123.sh',
      [
        '#!/usr/bin/env bash',
        '',
        '#PBS -N dask-worker',
        '#PBS -q workq',
        '#PBS -A physics',
        '#PBS -l select=1:ncpus=1:mem=954MB',
        '#PBS -l walltime=00:30:00',
        `#PBS -e ${logs}/`,
        `#PBS -o ${logs}/`,
        'echo "worker $PBS_JOBID in $PBS_O_WORKDIR"; sleep 60',
        '',
      ].join('\n'),
    );
    // Job._submit_job runs submit_command + script path; _job_id_from_submit_output takes job_id_regexp.
    const out = ok(`qsub ${path}`);
    const m = /(?<job_id>\d+)/.exec(out);
    expect(m?.groups?.job_id).to.be.a('string');
    const jobId = m!.groups!.job_id;
    await until('running', () => / R workq$/m.test(ok(`qstat ${jobId}`)));
    // close(): cancel_command job_id (the short id).
    ok(`qdel ${jobId}`);
    const file = inHn(join(logs, `dask-worker.o${jobId}`));
    await until('output delivered to the log directory', () => existsSync(file));
    expect(readFileSync(file, 'utf8')).to.equal(`worker ${jobId}.srv in ${wd}\n`);
  });

  it('Toil 5.9 TorqueBatchSystem (toil/batchSystems/torque.py): pbsnodes --version, qstat -x SHORT, Exit_status', async function () {
    // _pbsVersion: "PBSPro" in the answer selects PBS Pro's commands.
    const version = ok('pbsnodes --version');
    const mode = version.includes('PBSPro') ? 'pro' : 'oss';
    expect(mode).to.equal('pro');
    const logs = join(wd, 'toil-work');
    mkdirSync(logs);
    // generateTorqueWrapper: -o/-e carry ${PBS_JOBID}; the job cds to $PBS_O_WORKDIR.
    const wrapper = script(
      'torque_wrapperab12.sh',
      [
        '#!/bin/sh',
        `#PBS -o ${logs}/toil_wf1.1.\${PBS_JOBID}.out.log`,
        `#PBS -e ${logs}/toil_wf1.1.\${PBS_JOBID}.err.log`,
        'cd $PBS_O_WORKDIR',
        '',
        'pwd; sleep 3; echo failing >&2; exit 3',
        '',
      ].join('\n'),
    );
    // prepareQsub (pro): select=1:mem=NK:ncpus=N; the answer is the batch job id.
    const batchJobId = ok(`qsub -S /bin/sh -V -N toil_job_1 -l select=1:mem=1048576K:ncpus=2 ${wrapper}`).trim();
    const short = batchJobId.split('.')[0];
    // getRunningJobIDs: qstat -x SHORT..., columns: id, name, user, time, state.
    const running = (): number | undefined => {
      for (const line of ok(`qstat -x ${short}`).split('\n')) {
        const items = line.trim().split(/\s+/);
        if (items[0]?.split('.')[0] === short && items[4] === 'R') {
          const t = items[3];
          if (t === '0') return 0;
          const [h, mi, s] = t.split(':').map(Number);
          expect([h, mi, s].every(Number.isFinite), `time column ${t}`).to.equal(true);
          return h * 3600 + mi * 60 + s;
        }
      }
      return undefined;
    };
    await until('running per getRunningJobIDs', () => running() !== undefined);
    // getJobExitCode (pro): qstat -x -f SHORT, the line starting Exit_status, split on ' = '.
    const exitCode = (): number | undefined => {
      for (const raw of ok(`qstat -x -f ${short}`).split('\n')) {
        const line = raw.trim();
        if (line.startsWith('exit_status') || line.startsWith('Exit_status')) return Number.parseInt(line.split(' = ')[1], 10);
      }
      return undefined;
    };
    expect(await until('exit code', exitCode)).to.equal(3);
    expect(readFileSync(inHn(join(logs, `toil_wf1.1.${batchJobId}.err.log`)), 'utf8')).to.equal('failing\n');
    expect(readFileSync(inHn(join(logs, `toil_wf1.1.${batchJobId}.out.log`)), 'utf8')).to.equal(`${wd}\n`);
  });

  describe('Parsl (parsl/providers/pbspro/pbspro.py, parsl/providers/torque/torque.py)', function () {
    const submitScript = (name: string) =>
      script(
        `${name}.submit`,
        [
          '#!/bin/bash',
          '',
          '#PBS -S /bin/bash',
          `#PBS -N ${name}`,
          '#PBS -m n',
          '#PBS -l walltime=00:20:00',
          '#PBS -l select=1:ncpus=1',
          `#PBS -o ${wd}/${name}.submit.stdout`,
          `#PBS -e ${wd}/${name}.submit.stderr`,
          '',
          '',
          `export JOBNAME="${name}"`,
          '',
          'sleep 60',
          '',
        ].join('\n'),
      );
    /** submit(): the last non-empty stdout line is the job id. */
    const lastLine = (out: string) =>
      out
        .split('\n')
        .filter((l) => l.trim())
        .pop()!
        .trim();

    it("PBSProProvider: 'qsub  -q Q -A ACCT script', status from 'qstat -f -F json IDS', cancel with qdel", async function () {
      const a = lastLine(ok(`qsub  -q workq -A physics ${submitScript('parsl.1700000000.1')}`));
      const b = lastLine(ok(`qsub  -q workq -A physics ${submitScript('parsl.1700000000.2')}`));
      const status = (): Map<string, string> => {
        const doc = JSON.parse(sh(`qstat -f -F json ${a} ${b}`).stdout) as { Jobs?: Record<string, { job_state?: string }> };
        const m = new Map<string, string>();
        for (const [jid, job] of Object.entries(doc.Jobs ?? {})) {
          // Parsl coerces the (possibly short) id back to the one it submitted.
          const long = [a, b].find((l) => l.startsWith(jid)) ?? jid;
          m.set(long, job.job_state ?? 'UNKNOWN');
        }
        return m;
      };
      await until('both running', () => status().get(a) === 'R' && status().get(b) === 'R');
      // cancel(): one qdel for all; retcode 0 means every one was cancelled.
      expect(sh(`qdel ${a} ${b}`).status).to.equal(0);
      // _status() afterwards: stdout is still JSON; a job missing from Jobs is COMPLETED.
      await until('both gone from the JSON (COMPLETED for Parsl)', () => status().size === 0);
    });

    it("TorqueProvider: status from the 'qstat IDS' table, column 5", async function () {
      const id = lastLine(ok(`qsub  -q workq ${submitScript('parsl.parsl.torque.1700000000.3')}`));
      const states = (): Map<string, string> => {
        const m = new Map<string, string>();
        for (const line of sh(`qstat ${id}`).stdout.split('\n')) {
          const parts = line.split(/\s+/).filter(Boolean);
          if (!parts.length || parts[0].toUpperCase().startsWith('JOB') || parts[0].startsWith('---')) continue;
          m.set([id].find((l) => l.startsWith(parts[0])) ?? parts[0], parts[4]);
        }
        return m;
      };
      await until('running', () => states().get(id) === 'R');
      ok(`qdel ${id}`);
      // A finished job leaves the table (Parsl then calls it COMPLETED); qstat says why on stderr.
      await until('gone from the table', () => !states().has(id));
    });
  });

  it('Cromwell TORQUE backend (cromwell.example.backends/TORQUE.conf): -lwalltime=...,nodes=...,mem=... -d CWD, job-id-regex (\\d+)', async function () {
    const cwd = join(wd, 'cromwell-executions', 'hello', 'call-say');
    mkdirSync(join(cwd, 'execution'), { recursive: true });
    const scr = join(cwd, 'execution', 'script');
    writeFileSync(scr, '#!/bin/bash\npwd\nsleep 3\necho 0 > execution/rc\n', { mode: 0o755 });
    const out = ok(
      `qsub -N cromwell_1a2b3c4d_say -lwalltime=1:00:00,nodes=1:ppn=1,mem=2048mb -d ${cwd} -o ${cwd}/execution/stdout -e ${cwd}/execution/stderr ${scr}`,
    );
    const jobId = /(\d+)/.exec(out)![1];
    // check-alive while it runs: `qstat JOB_ID` exits 0.
    // check-alive is `qstat JOB_ID`; the job's own rc file (in the host folder under the test double) says it ended.
    expect(sh(`qstat ${jobId}`).status).to.equal(0);
    await until(
      'rc written',
      () => existsSync(join(cwd, 'execution', 'rc')),
      30_000,
      () => ok('qstat -x -s'),
    );
    await until('stdout delivered', () => existsSync(inHn(join(cwd, 'execution', 'stdout'))));
    expect(readFileSync(inHn(join(cwd, 'execution', 'stdout')), 'utf8')).to.equal(`${cwd}\n`);
    // check-alive once it has ended: PBS Pro's "Job has finished" and a non-zero exit.
    const gone = await until('check-alive says ended', () => {
      const r = sh(`qstat ${jobId}`);
      return r.status !== 0 && r;
    });
    expect(gone.status).to.equal(35);
    expect(gone.stderr).to.equal(`qstat: ${jobId}.srv Job has finished, use -x or -H to obtain historical job information\n`);
    expect(sh(`qdel ${jobId}`).status, 'kill of a finished job is refused').to.not.equal(0);
  });

  it('Snakemake --cluster-status script (README): qstat -x -f -F json ID gives job_state F and Exit_status', async function () {
    const id = ok(`qsub -l walltime=1:00:00 ${script('snake.sh', '#!/bin/sh\nexit 0\n')}`).trim();
    const st = async () => (JSON.parse(ok(`qstat -x -f -F json ${id}`)) as { Jobs: Record<string, { job_state: string; Exit_status?: number }> }).Jobs[id];
    await until('finished', async () => (await st()).job_state === 'F');
    expect((await st()).Exit_status).to.equal(0);
  });

  it('Snakemake-Profiles/pbs-torque pbs-submit.py: -l "nodes=1:ppn=N,mem=M,walltime=W" -W "depend=afterok:ID"', async function () {
    const jobscript = script('snakejob.a.1.sh', '#!/bin/sh\n# properties = {"type": "single", "rule": "a", "threads": 4}\necho ran-$PBS_JOBNAME\n');
    // The command line the profile assembles (its string concatenation, quoting included).
    const first = ok(`qsub  -j oe -l "nodes=1:ppn=4,mem=1gb,walltime=01:00:00" ${jobscript}`).trim();
    const second = ok(`qsub  -j oe -l "nodes=1:ppn=4,mem=1gb,walltime=01:00:00" -W "depend=afterok:${first}" ${jobscript}`).trim();
    const state = (id: string) =>
      (JSON.parse(ok(`qstat -x -f -F json ${id}`)) as { Jobs: Record<string, { job_state: string; Exit_status?: number }> }).Jobs[id];
    await until(
      'the dependent ran after its parent',
      () => state(second).job_state === 'F',
      30_000,
      () => ok('qstat -x -s'),
    );
    expect(state(first).Exit_status).to.equal(0);
    expect(state(second).Exit_status).to.equal(0);
    // Its pbs-status.py reads Torque (a C in `qstat ID`, then <exit_status> XML): not PBS Pro's answers (README: known gaps).
    expect(sh(`qstat ${second}`).status).to.equal(35);
  });

  it('destinations: an unknown queue or server is one clear line and a non-zero exit', function () {
    const q = sh('qstat -f nosuchq');
    expect(q.status).to.not.equal(0);
    expect(q.stderr.trim()).to.equal('qstat: Unknown queue destination nosuchq; queues: workq');
    const s = sh('qstat @elsewhere');
    expect(s.status).to.not.equal(0);
    expect(s.stderr.trim()).to.equal('qstat: cannot connect to server elsewhere: this server is srv');
    expect(sh('qstat -1').stderr.trim()).to.equal('qstat: -1 goes with -n, -s or -f');
  });
});
