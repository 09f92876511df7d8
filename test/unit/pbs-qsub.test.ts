import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { UsageError } from '../../src/errors.js';
import { parseQsub, qsubHelp } from '../../src/pbs/qsub-options.js';
import type { QsubContext, QsubJob } from '../../src/pbs/qsub-options.js';

// dist/test/unit -> repository root: fixtures are not copied by tsc.
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/pbs/', import.meta.url));
const NOW = new Date(2024, 5, 13, 10, 0, 0).getTime();

function fixture(name: string): string {
  return readFileSync(join(FIXTURES, name), 'utf8');
}

function ctx(over: Partial<QsubContext> = {}): QsubContext {
  return {
    cwd: '/home/alice/work',
    env: { HOME: '/home/alice', PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
    user: 'alice',
    group: 'physics',
    headnode: 'hn-alice',
    submitHost: 'hn-alice',
    now: NOW,
    defaultQueue: 'workq',
    readFile: (path) => {
      try {
        return fixture(path);
      } catch {
        return undefined;
      }
    },
    ...over,
  };
}

/** A context whose only file is job.sh with this text. */
function withScript(text: string, over: Partial<QsubContext> = {}): QsubContext {
  return ctx({ readFile: (p) => (p === 'job.sh' ? text : undefined), ...over });
}

function job(argv: string[], c: QsubContext = ctx()): QsubJob {
  const r = parseQsub(argv, c);
  if (r.kind !== 'job') throw new Error(`expected a job, got ${r.kind}`);
  return r;
}

function usageError(argv: string[], c: QsubContext = ctx()): string {
  try {
    parseQsub(argv, c);
  } catch (err) {
    expect(err).to.be.instanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('pbs qsub: script corpus', () => {
  it('mpi-select.pbs: select chunks, walltime, queue, join, account', () => {
    const r = job(['mpi-select.pbs']);
    expect(r.spec).to.deep.equal({
      argv: [],
      script: fixture('mpi-select.pbs'),
      scriptArgs: [],
      name: 'cfd_mpi',
      cwd: '/home/alice/work',
      env: {},
      user: 'alice',
      group: 'physics',
      headnode: 'hn-alice',
      queue: 'workq',
      priority: 0,
      walltimeSec: 43200,
      join: 'oe',
      rerunnable: true,
      resources: { ncpus: 128, memMiB: 491520 },
      submitHost: 'hn-alice',
      accountName: 'proj0042',
    });
    expect(r.chunks).to.deep.equal([{ count: 4, ncpus: 32, mpiprocs: 32, memMiB: 122880 }]);
    expect(r.warnings).to.deep.equal(['-l select: 4 chunks are run as one job with 128 CPUs in a single clone VM']);
    expect(r).to.include({ block: false, hold: false });
  });

  it('openmp.pbs: ncpus and mem in one -l, OMP_NUM_THREADS through -v', () => {
    const r = job(['openmp.pbs']);
    expect(r.spec.name).to.equal('omp_bench');
    expect(r.spec.resources).to.deep.equal({ ncpus: 8, memMiB: 16384 });
    expect(r.spec.walltimeSec).to.equal(14400);
    expect(r.spec.env).to.deep.equal({ OMP_NUM_THREADS: '8', OMP_PROC_BIND: 'close' });
    expect(r.chunks).to.equal(undefined);
    expect(r.warnings).to.deep.equal([]);
  });

  it('array-sweep.pbs: -J with step and %max, -o into a directory', () => {
    const r = job(['array-sweep.pbs']);
    expect(r.array?.max).to.equal(20);
    expect(r.array?.indices).to.have.length(50);
    expect(r.array?.indices.slice(0, 3)).to.deep.equal([1, 5, 9]);
    expect(r.array?.indices.at(-1)).to.equal(197);
    expect(r.outputDirs).to.deep.equal({ stdout: '/home/alice/work/logs' });
    expect(r.spec.stdoutPath).to.equal(undefined);
    expect(r.spec.join).to.equal('oe');
    expect(r.spec.resources).to.deep.equal({ ncpus: 1, memMiB: 2048 });
    expect(r.spec.walltimeSec).to.equal(1800);
    expect(r.warnings).to.deep.equal([]);
  });

  it('torque-nodes.pbs: nodes=1:ppn=8 with job-wide mem, -V, -m/-M on the spec', () => {
    const r = job(['torque-nodes.pbs']);
    expect(r.spec.name).to.equal('gromacs_md');
    expect(r.spec.resources).to.deep.equal({ ncpus: 8, memMiB: 16384 });
    expect(r.spec.walltimeSec).to.equal(172800);
    expect(r.spec.queue).to.equal('batch');
    expect(r.spec.env).to.deep.equal({ HOME: '/home/alice', PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' });
    expect(r.chunks).to.deep.equal([{ count: 1, ncpus: 8 }]);
    expect(r.spec).to.include({ mailPoints: 'abe' });
    expect(r.spec.mailUsers).to.deep.equal(['alice@example.org']);
    expect(r.warnings).to.deep.equal([]);
  });

  it('torque-array.pbs: -t with %max, nodes and walltime in one -l, -o/-e directories', () => {
    const r = job(['torque-array.pbs']);
    expect(r.array).to.deep.equal({ indices: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], max: 6 });
    expect(r.spec.resources).to.deep.equal({ ncpus: 2, memMiB: 0 });
    expect(r.spec.walltimeSec).to.equal(3600);
    expect(r.outputDirs).to.deep.equal({ stdout: '/home/alice/work/out', stderr: '/home/alice/work/err' });
  });

  it('joined-output.pbs: -j oe with an absolute -o, MM:SS walltime, -r n', () => {
    const r = job(['joined-output.pbs']);
    expect(r.spec).to.include({ name: 'nightly_report', join: 'oe', stdoutPath: '/home/alice/reports/nightly.log', walltimeSec: 900, rerunnable: false });
    expect(r.spec.stderrPath).to.equal(undefined);
  });

  it('depend-mail.pbs: -W depend=afterok on two jobs, two mail addresses', () => {
    const r = job(['depend-mail.pbs']);
    expect(r.depend).to.deep.equal([{ type: 'afterok', jobIds: ['1234.pbsserver', '1235.pbsserver'] }]);
    expect(r.spec.walltimeSec).to.equal(1200);
    expect(r.spec.mailPoints).to.equal('ae');
    expect(r.spec.mailUsers).to.deep.equal(['alice@example.org', 'bob@example.org']);
  });

  it('long-queue-held.pbs: -q, -p, -h, a week of walltime', () => {
    const r = job(['long-queue-held.pbs']);
    expect(r.spec).to.include({ name: 'longrun', queue: 'long', priority: 100, walltimeSec: 604800 });
    expect(r.spec.resources).to.deep.equal({ ncpus: 4, memMiB: 0 });
    expect(r.hold).to.equal(true);
  });

  it('directives-stop.pbs: directives after the first command are ignored, with a warning', () => {
    const r = job(['directives-stop.pbs']);
    expect(r.spec.name).to.equal('early');
    expect(r.spec.walltimeSec).to.equal(3600);
    expect(r.warnings).to.deep.equal([
      'directives-stop.pbs:7: #PBS -l walltime=10:00:00: ignored, directives after the first command (line 6) do not count',
      'directives-stop.pbs:8: #PBS -N late: ignored, directives after the first command (line 6) do not count',
    ]);
  });

  it('attached-values.pbs: getopt-style -lselect=... and -Nname', () => {
    const r = job(['attached-values.pbs']);
    expect(r.spec.name).to.equal('matlab_job');
    expect(r.spec.resources).to.deep.equal({ ncpus: 8, memMiB: 8192 });
    expect(r.spec.walltimeSec).to.equal(28800);
  });

  it('cleanup-chain.pbs: afterany and afternotok, -a later today, -r y, -S', () => {
    const r = job(['cleanup-chain.pbs']);
    expect(r.depend).to.deep.equal([
      { type: 'afterany', jobIds: ['2001'] },
      { type: 'afternotok', jobIds: ['2002'] },
    ]);
    expect(r.beginAt).to.equal(new Date(2024, 5, 13, 23, 30).getTime());
    expect(r.spec.rerunnable).to.equal(true);
    expect(r.spec.shell).to.equal('/bin/bash');
  });

  it('quoted-comments.pbs: quoted -v values with commas and spaces, trailing comments, block', () => {
    const r = job(['quoted-comments.pbs']);
    expect(r.spec.name).to.equal('quoted_job');
    expect(r.spec.env).to.deep.equal({ INPUT: '/data/set 1', MODE: 'fast,safe' });
    expect(r.spec.walltimeSec).to.equal(300);
    expect(r.block).to.equal(true);
  });

  it('hybrid-multichunk.pbs: "+"-joined chunks are summed; place is accepted and ignored', () => {
    const r = job(['hybrid-multichunk.pbs']);
    expect(r.spec.resources).to.deep.equal({ ncpus: 20, memMiB: 4096 });
    expect(r.chunks).to.deep.equal([
      { count: 2, ncpus: 8, mpiprocs: 2, ompthreads: 4 },
      { count: 1, ncpus: 4, memMiB: 4096 },
    ]);
    expect(r.warnings).to.deep.equal([
      '-l select: 3 chunks are run as one job with 20 CPUs in a single clone VM',
      '-l place=scatter:excl ignored: a Copper job runs in a single clone VM',
    ]);
  });
});

describe('pbs qsub: bad directives name file, line and directive', () => {
  const cases: [string, string][] = [
    ['bad-unknown-option.pbs', 'bad-unknown-option.pbs:4: #PBS -Y: unknown option -Y'],
    ['bad-gpu-chunk.pbs', 'bad-gpu-chunk.pbs:3: #PBS -l select=1:ncpus=4:ngpus=1: -l select: "ngpus" asks for GPUs or accelerators, which no Copper host has'],
    [
      'bad-custom-resource.pbs',
      'bad-custom-resource.pbs:5: #PBS -l matlab_lic=1: -l: unknown resource "matlab_lic"; an administrator can declare it in quotas.yaml (resources: [matlab_lic])',
    ],
    ['bad-umask.pbs', 'bad-umask.pbs:3: #PBS -W umask=0x22: -W umask=0x22: give an octal mask, e.g. umask=022'],
    ['bad-walltime.pbs', 'bad-walltime.pbs:3: #PBS -l walltime=1:75:00: -l walltime: "1:75:00" has minutes or seconds above 59'],
    ['bad-nodes-gpus.pbs', 'bad-nodes-gpus.pbs:3: #PBS -l nodes=1:ppn=4:gpus=2: -l nodes: "gpus" asks for GPUs or accelerators, which no Copper host has'],
    ['bad-operand.pbs', 'bad-operand.pbs:2: #PBS -N two words: unexpected argument "words"'],
  ];
  for (const [file, message] of cases) {
    it(file, () => expect(usageError([file])).to.equal(message));
  }

  it('-C in a directive', () => {
    expect(usageError(['job.sh'], withScript('#PBS -C "#X"\necho\n'))).to.equal('job.sh:1: #PBS -C "#X": -C can only be given on the command line');
  });
});

describe('pbs qsub: forms and defaults', () => {
  it('fills every default for a bare command', () => {
    const r = job(['--', 'true']);
    expect(r).to.deep.equal({
      kind: 'job',
      spec: {
        argv: ['true'],
        name: 'true',
        cwd: '/home/alice/work',
        env: {},
        user: 'alice',
        group: 'physics',
        headnode: 'hn-alice',
        queue: 'workq',
        priority: 0,
        join: 'n',
        rerunnable: true,
        resources: { ncpus: 1, memMiB: 0 },
        submitHost: 'hn-alice',
      },
      block: false,
      hold: false,
      quiet: false,
      interactive: false,
      warnings: [],
    });
  });

  it('keeps the command as argv, never re-parsed by a shell', () => {
    const r = job(['-N', 'x', '--', 'sh', '-c', 'echo $HOME; exit 3', '-N', 'y']);
    expect(r.spec.argv).to.deep.equal(['sh', '-c', 'echo $HOME; exit 3', '-N', 'y']);
    expect(r.spec.name).to.equal('x');
    expect(r.spec.script).to.equal(undefined);
  });

  it('names a command job after the command', () => expect(job(['--', '/usr/bin/python3', 'a.py']).spec.name).to.equal('python3'));

  it('names a script job after the script file', () => {
    const r = job(['jobs/run.sh'], ctx({ readFile: (p) => (p === 'jobs/run.sh' ? 'echo\n' : undefined) }));
    expect(r.spec.name).to.equal('run.sh');
    expect(r.spec.script).to.equal('echo\n');
  });

  it('passes everything after the script to the script', () => {
    const r = job(['-q', 'fast', 'job.sh', 'in.dat', '-N', 'y', '--', 'z'], withScript('echo\n'));
    expect(r.spec.scriptArgs).to.deep.equal(['in.dat', '-N', 'y', '--', 'z']);
    expect(r.spec.name).to.equal('job.sh');
    expect(r.spec.queue).to.equal('fast');
  });

  it('asks for the script when it was not sent', () => {
    expect(parseQsub(['-N', 'a', 'job.sh'], ctx({ readFile: () => undefined }))).to.deep.equal({ kind: 'needFile', needFile: 'job.sh' });
    const { readFile: _unused, ...noReader } = ctx();
    expect(parseQsub(['sub/job.sh', 'arg'], noReader)).to.deep.equal({ kind: 'needFile', needFile: 'sub/job.sh' });
  });

  it('checks command-line options before asking for the script', () => {
    expect(usageError(['-p', '5000', 'job.sh'], ctx({ readFile: () => undefined }))).to.equal(
      '-p 5000: the priority must be a whole number from -1024 to 1023',
    );
  });

  it('refuses a missing operand, an empty --, stdin and a relative cwd', () => {
    expect(parseQsub(['-N', 'a'], ctx())).to.deep.equal({ kind: 'needFile', needFile: '-' }, 'no operand: the client sends its stdin');
    expect(usageError(['-N', 'a', '--'])).to.equal('-- must be followed by a command');
    expect(usageError(['-'], ctx({ isMissing: (p) => p === '-' }))).to.equal(
      'no job script given: use gcqsub [options] script, gcqsub [options] -- command [args], or pipe a script into gcqsub',
    );
    expect(usageError(['--', 'true'], ctx({ cwd: 'work' }))).to.equal('the working directory "work" is not an absolute path');
  });

  it('returns help for --help, rendered as text', () => {
    const r = parseQsub(['--help'], ctx());
    expect(r.kind).to.equal('help');
    const help = r.kind === 'help' ? r.help : '';
    expect(help).to.equal(qsubHelp());
    expect(help.split('\n')[0]).to.equal('gcqsub [options] script [script-args...]');
    expect(help).to.match(/-W +depend=afterok:ID\[:ID\]\[,afternotok:\.\.,afterany:\.\.\] or block=true/);
  });
});

describe('pbs qsub: getopt-style command lines', () => {
  it('takes attached values and grouped flags', () => {
    const r = job(['-Nattached', '-hV', '-lwalltime=1:00,ncpus=2', '--', 'x']);
    expect(r.spec.name).to.equal('attached');
    expect(r.hold).to.equal(true);
    expect(r.spec.env).to.deep.equal(ctx().env);
    expect(r.spec.walltimeSec).to.equal(60);
    expect(r.spec.resources.ncpus).to.equal(2);
  });

  it('lets a flag group end in an option with its value', () => expect(job(['-hNgrouped', '--', 'x']).spec.name).to.equal('grouped'));
  it('takes a negative priority as a value', () => expect(job(['-p', '-10', '--', 'x']).spec.priority).to.equal(-10));
  it('takes a value that starts with "-" verbatim', () => expect(usageError(['-N', '-x', '--', 'x'])).to.equal('-N -x: the job name must start with a letter'));
  it('accepts --cron with a separate or attached value', () => {
    expect(job(['--cron', '*/15 * * * *', '--', 'x']).cron).to.equal('*/15 * * * *');
    expect(job(['--cron=@daily', '--', 'x']).cron).to.equal('@daily');
  });
  it('adds up repeated -l, -v and -W', () => {
    const r = job(['-l', 'walltime=1:00:00', '-l', 'mem=2gb', '-v', 'A=1', '-v', 'B=2', '-W', 'block=true', '-W', 'depend=afterok:5', '--', 'x']);
    expect(r.spec.walltimeSec).to.equal(3600);
    expect(r.spec.resources.memMiB).to.equal(2048);
    expect(r.spec.env).to.deep.equal({ A: '1', B: '2' });
    expect(r.block).to.equal(true);
    expect(r.depend).to.deep.equal([{ type: 'afterok', jobIds: ['5'] }]);
  });
  it('lets the last of a repeated option win', () => expect(job(['-N', 'first', '-N', 'second', '--', 'x']).spec.name).to.equal('second'));

  it('names unknown options and missing values', () => {
    expect(usageError(['-Y', 'job.sh'])).to.equal('unknown option -Y');
    expect(usageError(['-hY'])).to.equal('unknown option -Y');
    expect(usageError(['--bogus', '--', 'x'])).to.equal('unknown option --bogus');
    expect(usageError(['--N', 'x'])).to.equal('unknown option --N');
    expect(usageError(['-N'])).to.equal('option -N needs a value');
    expect(usageError(['--cron'])).to.equal('option --cron needs a value');
    expect(usageError(['--help=yes'])).to.equal('option --help takes no value');
    expect(usageError(['-G', '--', 'bash'])).to.equal(
      '-G: interactive GUI jobs are not supported; use gcqsub -I for a shell, and run graphical programs in your headnode',
    );
  });
});

describe('pbs qsub: command line against directives', () => {
  it('command-line options win, per option and per resource', () => {
    const r = job(['-N', 'cli', '-l', 'walltime=2:00:00', '-q', 'fast', 'mpi-select.pbs']);
    expect(r.spec).to.include({ name: 'cli', walltimeSec: 7200, queue: 'fast', join: 'oe' });
    expect(r.spec.resources).to.deep.equal({ ncpus: 128, memMiB: 491520 });
  });

  it("a command-line select replaces the script's Torque nodes; the script's mem stays", () => {
    const r = job(['-l', 'select=1:ncpus=2', 'torque-nodes.pbs']);
    expect(r.spec.resources).to.deep.equal({ ncpus: 2, memMiB: 16384 });
    expect(r.chunks).to.deep.equal([{ count: 1, ncpus: 2 }]);
  });

  it('refuses a job-wide ncpus next to select chunks', () => {
    expect(usageError(['-l', 'ncpus=4', 'mpi-select.pbs'])).to.equal(
      '-l ncpus cannot be combined with -l select; give the CPUs inside the chunk (select=1:ncpus=8)',
    );
    expect(usageError(['-l', 'ncpus=4', 'torque-nodes.pbs'])).to.equal(
      '-l ncpus cannot be combined with -l nodes; give the CPUs inside the node spec (nodes=1:ppn=8)',
    );
  });

  it('merges -v variables, the command line winning', () => {
    const r = job(['-v', 'OMP_NUM_THREADS=4,EXTRA,MISSING', 'openmp.pbs'], ctx({ env: { EXTRA: 'e' } }));
    expect(r.spec.env).to.deep.equal({ OMP_NUM_THREADS: '4', OMP_PROC_BIND: 'close', EXTRA: 'e', MISSING: '' });
    expect(r.warnings).to.deep.equal(['-v MISSING: not set in your environment; the job gets it empty']);
  });

  it('-V exports the environment, -v values on top', () => {
    expect(job(['-V', '-v', 'PATH=/opt/bin', '--', 'x']).spec.env).to.deep.equal({ HOME: '/home/alice', PATH: '/opt/bin', LANG: 'C.UTF-8' });
  });

  it('-C picks another directive prefix, and "" turns directives off', () => {
    const script = '#MYJOB -N custom\n#PBS -N pbsname\necho\n';
    expect(job(['-C', '#MYJOB', 'job.sh'], withScript(script)).spec.name).to.equal('custom');
    expect(job(['-C', '', 'job.sh'], withScript(script)).spec.name).to.equal('job.sh');
    expect(job(['job.sh'], withScript(script)).spec.name).to.equal('pbsname');
    expect(job(['job.sh'], withScript(script, { env: { PBS_DPREFIX: '#MYJOB' } })).spec.name).to.equal('custom');
  });

  it('takes long options, -V and bare -v names in directives too', () => {
    const script = '#!/bin/sh\n#PBS --cron "0 2 * * 1-5"\n#PBS -V -v HOME\n./nightly\n';
    const r = job(['job.sh'], withScript(script));
    expect(r.cron).to.equal('0 2 * * 1-5');
    expect(r.spec.env).to.deep.equal({ HOME: '/home/alice', PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' });
  });

  it('warns about DOS line endings', () => {
    const r = job(['job.sh'], withScript('#!/bin/sh\r\n#PBS -N dos\r\necho\r\n'));
    expect(r.spec.name).to.equal('dos');
    expect(r.warnings).to.deep.equal(['job.sh has DOS line endings (\\r\\n); the shell will choke on them: convert it with dos2unix']);
  });
});

describe('pbs qsub: option values', () => {
  it('-N follows PBS name rules', () => {
    expect(job(['-N', 'a'.repeat(236), '--', 'x']).spec.name).to.have.length(236);
    expect(usageError(['-N', 'a'.repeat(237), '--', 'x'])).to.equal('-N: the job name has 237 characters; at most 236 are allowed');
    expect(usageError(['-N', '9lives', '--', 'x'])).to.equal('-N 9lives: the job name must start with a letter');
    expect(usageError(['-N', 'my job', '--', 'x'])).to.equal('-N "my job": the job name must not contain white space');
    expect(usageError(['-N', 'a/b', '--', 'x'])).to.equal('-N a/b: the job name must not contain "/" or control characters');
    expect(usageError(['-N', '', '--', 'x'])).to.equal('-N: the job name is empty');
  });

  it('-o/-e resolve against cwd; a directory gets the default name', () => {
    expect(job(['-o', '../out.txt', '-e', 'err.txt', '--', 'x']).spec).to.include({
      stdoutPath: '/home/alice/out.txt',
      stderrPath: '/home/alice/work/err.txt',
    });
    expect(job(['-o', 'logs/', '--', 'x']).outputDirs).to.deep.equal({ stdout: '/home/alice/work/logs' });
    const dirs = ctx({ isDirectory: (p) => p === '/scratch/alice' });
    const r = job(['-e', '/scratch/alice', '--', 'x'], dirs);
    expect(r.outputDirs).to.deep.equal({ stderr: '/scratch/alice' });
    expect(r.spec.stderrPath).to.equal(undefined);
  });

  it('-o drops a host part, warning when it is not this headnode', () => {
    const own = job(['-o', 'hn-alice:/tmp/o', '--', 'x']);
    expect(own.spec.stdoutPath).to.equal('/tmp/o');
    expect(own.warnings).to.deep.equal([]);
    const other = job(['-o', 'login2:/tmp/o', '--', 'x']);
    expect(other.spec.stdoutPath).to.equal('/tmp/o');
    expect(other.warnings).to.deep.equal(['-o login2:/tmp/o: host login2 ignored; output is written inside the headnode']);
    expect(usageError(['-e', '', '--', 'x'])).to.equal('-e: the path is empty');
  });

  it('checks -j, -r, -p, -q, -m, -S, -A', () => {
    expect(job(['-j', 'eo', '--', 'x']).spec.join).to.equal('eo');
    expect(usageError(['-j', 'oo', '--', 'x'])).to.equal('-j oo: use oe (stderr into stdout), eo (stdout into stderr) or n');
    expect(usageError(['-r', 'maybe', '--', 'x'])).to.equal('-r maybe: use y or n');
    expect(job(['-p', '-1024', '--', 'x']).spec.priority).to.equal(-1024);
    expect(usageError(['-p', '1024', '--', 'x'])).to.equal('-p 1024: the priority must be a whole number from -1024 to 1023');
    expect(usageError(['-p', 'high', '--', 'x'])).to.equal('-p high: the priority must be a whole number from -1024 to 1023');
    expect(usageError(['-q', 'q@srv', '--', 'x'])).to.equal('-q q@srv: queues on other servers are not supported; give a queue name');
    expect(usageError(['-q', '1q', '--', 'x'])).to.equal('-q 1q: a queue name is a letter followed by up to 14 letters, digits, "_", "-" or "."');
    expect(usageError(['-m', 'xyz', '--', 'x'])).to.equal('-m xyz: use any of a, b, e (and j for array subjobs), or n for none');
    const noMail = job(['-m', 'n', '--', 'x']);
    expect(noMail.spec.mailPoints).to.equal('n');
    expect(noMail.warnings).to.deep.equal([]);
    expect(usageError(['-S', 'bash', '--', 'x'])).to.equal('-S bash: give the absolute path of a shell, e.g. /bin/bash');
    expect(usageError(['-A', ' ', '--', 'x'])).to.equal('-A: the account is empty');
  });

  it('checks -l items', () => {
    expect(usageError(['-l', 'walltime', '--', 'x'])).to.equal('-l: "walltime" is not name=value, e.g. walltime=01:00:00');
    expect(usageError(['-l', 'ncpus=0', '--', 'x'])).to.equal('-l ncpus: "0" must be a whole number from 1 to 100000');
    expect(usageError(['-l', 'mem=', '--', 'x'])).to.equal('-l mem: missing value; write mem=VALUE');
    expect(usageError(['-l', 'select=2:ncpus', '--', 'x'])).to.equal('-l select: ncpus needs a value, e.g. ncpus=4');
    expect(job(['-l', 'nodes=1:ppn=4:ib', '--', 'x']).warnings).to.deep.equal(['-l nodes: node property "ib" ignored; every clone is alike']);
    expect(usageError(['-l', 'place=spread', '--', 'x'])).to.equal(
      '-l place: unknown placement "spread" (use free, pack, scatter, vscatter, excl, shared, exclhost or group=RES)',
    );
    expect(usageError(['-l', 'select=1:ncpus=2:mem=4gb,mem=8gb', '--', 'x'])).to.equal(
      '-l mem cannot be combined with mem= inside -l select; give one of them',
    );
  });

  it('parses -W depend and block', () => {
    const r = job(['-W', 'depend=afterok:1:2,afterany:3,afterok:2:4[].srv,block=true', '--', 'x']);
    expect(r.depend).to.deep.equal([
      { type: 'afterok', jobIds: ['1', '2', '4[].srv'] },
      { type: 'afterany', jobIds: ['3'] },
    ]);
    expect(r.block).to.equal(true);
    expect(usageError(['-W', 'depend=before:12', '--', 'x'])).to.equal('-W depend: "before" is not supported; use afterok, afternotok or afterany');
    expect(usageError(['-W', 'depend=afterok:abc', '--', 'x'])).to.equal('-W depend: "abc" is not a job id');
    expect(usageError(['-W', 'depend=afterok', '--', 'x'])).to.equal('-W depend: afterok needs job ids, e.g. afterok:123');
    expect(usageError(['-W', 'block=yes', '--', 'x'])).to.equal('-W block=yes: use block=true or block=false');
    expect(usageError(['-W', 'foo', '--', 'x'])).to.equal('-W foo: expected attribute=value, e.g. depend=afterok:123');
  });

  it('checks arrays, -a and their combinations', () => {
    expect(job(['-J', '1-3', '--', 'x']).array).to.deep.equal({ indices: [1, 2, 3] });
    expect(job(['-t', '1,3', '--', 'x']).array).to.deep.equal({ indices: [1, 3] });
    expect(usageError(['-J', '1-3', '-t', '1', '--', 'x'])).to.equal('-J and -t both ask for an array job; give one of them');
    expect(usageError(['-J', '10-1', '--', 'x'])).to.equal('-J: "10-1" has end 1 not above start 10');
    expect(job(['-a', '0930', '--', 'x']).beginAt).to.equal(new Date(2024, 5, 14, 9, 30).getTime());
  });

  it('checks --cron patterns', () => {
    expect(usageError(['--cron', '0 0 30 2 *', '--', 'x'])).to.equal('--cron "0 0 30 2 *": never fires (no listed month has that day)');
    expect(usageError(['--cron', '0 0 * *', '--', 'x'])).to.equal('--cron "0 0 * *": expected 5 fields (minute hour day-of-month month day-of-week), got 4');
    expect(usageError(['--cron', '* * * * * *', '--', 'x'])).to.equal(
      '--cron "* * * * * *": expected 5 fields (minute hour day-of-month month day-of-week), got 6',
    );
    expect(usageError(['--cron', '@reboot', '--', 'x'])).to.equal(
      '--cron "@reboot": unknown alias; use @yearly, @annually, @monthly, @weekly, @daily, @hourly',
    );
    expect(usageError(['--cron', '61 * * * *', '--', 'x'])).to.equal(
      '--cron "61 * * * *": invalid pattern (Constraint error, got value 61 expected range 0-59)',
    );
    expect(usageError(['--cron', '@daily', '-a', '2330', '--', 'x'])).to.equal('--cron and -a both set a start time; give one of them');
    expect(usageError(['--cron', '@daily', '-W', 'block=true', '--', 'x'])).to.equal(
      '--cron cannot be combined with -W block=true: a recurring job never finishes',
    );
  });

  it('accepts --headnode on the host only, and requires it there', () => {
    expect(usageError(['--headnode', 'hn7', '--', 'x'])).to.equal('--headnode: only accepted on the host; inside a headnode, jobs run on that headnode');
    const host = ctx({ headnode: '', hostSide: true });
    expect(job(['--headnode', 'hn7', '--', 'x'], host).spec.headnode).to.equal('hn7');
    expect(usageError(['--', 'x'], host)).to.equal('--headnode NAME is required when submitting from the host');
    expect(usageError(['--headnode', 'bad name', '--', 'x'], host)).to.equal('--headnode bad name: not a headnode name');
  });
});
