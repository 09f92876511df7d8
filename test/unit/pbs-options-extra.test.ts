import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { UsageError } from '../../src/errors.js';
import { installPbsNames, wrapperText } from '../../src/client/pbs-names.js';
import { parseQsub } from '../../src/pbs/qsub-options.js';
import type { QsubContext, QsubJob } from '../../src/pbs/qsub-options.js';
import { parseSelectCriteria, selectMatches } from '../../src/pbs/qselect.js';
import { formatArrayIndices, formatQstatFull } from '../../src/pbs/qstat-format.js';
import type { JobRecord } from '../../src/queue/job.js';
import { neverFits, resolveAssignment } from '../../src/scheduler/capacity.js';

function ctx(script: string, over: Partial<QsubContext> = {}): QsubContext {
  return {
    cwd: '/home/alice/work',
    env: { HOME: '/home/alice' },
    user: 'alice',
    group: 'physics',
    headnode: 'hn',
    submitHost: 'hn',
    now: Date.UTC(2024, 5, 13),
    defaultQueue: 'workq',
    readFile: (p) => (p === 'job.sh' || p === '-' ? script : undefined),
    ...over,
  };
}

function job(argv: string[], script = 'echo\n', over: Partial<QsubContext> = {}): QsubJob {
  const r = parseQsub(argv, ctx(script, over));
  if (r.kind !== 'job') throw new Error(`expected a job, got ${r.kind}`);
  return r;
}

function refusal(argv: string[], script = 'echo\n', over: Partial<QsubContext> = {}): string {
  try {
    parseQsub(argv, ctx(script, over));
  } catch (e) {
    expect(e).to.be.instanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('pbs qsub: options honoured', () => {
  it('-S replaces the #! line (or adds one): the script runs under that interpreter', () => {
    expect(job(['-S', '/bin/bash', 'job.sh'], '#!/bin/sh\n#PBS -N a\necho $BASH\n').spec.script).to.equal('#!/bin/bash\n#PBS -N a\necho $BASH\n');
    expect(job(['-S', '/bin/zsh@login1,/bin/bash', 'job.sh'], 'echo\n').spec.script).to.equal('#!/bin/zsh\necho\n');
    const cmd = job(['-S', '/bin/bash', '--', 'true']);
    expect(cmd.warnings).to.deep.equal(['-S /bin/bash ignored: a command given after -- runs without a shell']);
  });

  it('-A, -P, -m, -M, -W group_list land on the spec; -z prints no id', () => {
    const r = job(['-A', 'acct-1', '-P', 'proj', '-m', 'be', '-M', 'a@x.org,b@x.org', '-W', 'group_list=physics', '-z', 'job.sh'], 'echo\n', {
      accountGroups: ['root', 'physics'],
    });
    expect(r.spec).to.include({ accountName: 'acct-1', project: 'proj', mailPoints: 'be', groupList: 'physics' });
    expect(r.spec.mailUsers).to.deep.equal(['a@x.org', 'b@x.org']);
    expect(r.quiet).to.equal(true);
    expect(r.warnings).to.deep.equal([]);
    expect(refusal(['-W', 'group_list=astro', 'job.sh'], 'echo\n', { accountGroups: ['root'] })).to.equal(
      '-W group_list=astro: the submitting account is not in group astro (its groups: root)',
    );
    expect(refusal(['-P', 'a b', '--', 'x'])).to.equal('-P a b: a project name has no spaces or commas');
    const fixture = readFileSync(fileURLToPath(new URL('../../../test/fixtures/pbs/bad-group.pbs', import.meta.url)), 'utf8');
    expect(
      refusal(['bad-group.pbs'], fixture, { accountGroups: ['root', 'physics'], readFile: (p) => (p === 'bad-group.pbs' ? fixture : undefined) }),
    ).to.equal('bad-group.pbs:3: #PBS -W group_list=astro: -W group_list=astro: the submitting account is not in group astro (its groups: root, physics)');
  });

  it('-d/-w set the working directory, -F adds script arguments', () => {
    const r = job(['-d', '../run', '-F', 'in.dat "two words"', 'job.sh']);
    expect(r.spec.cwd).to.equal('/home/alice/run');
    expect(r.spec.scriptArgs).to.deep.equal(['in.dat', 'two words']);
    expect(job(['-w', '/scratch', '--', 'x']).spec.cwd).to.equal('/scratch');
  });

  it('Torque memory forms: pmem x CPUs, vmem when no mem; mem wins', () => {
    expect(job(['-l', 'nodes=1:ppn=4,pmem=2gb', '--', 'x']).spec.resources).to.deep.equal({ ncpus: 4, memMiB: 8192 });
    expect(job(['-l', 'procs=6,pvmem=1gb', '--', 'x']).spec.resources).to.deep.equal({ ncpus: 6, memMiB: 6144 });
    expect(job(['-l', 'vmem=16gb', '--', 'x']).spec.resources).to.deep.equal({ ncpus: 1, memMiB: 16384 });
    const both = job(['-l', 'mem=8gb,vmem=16gb', '--', 'x']);
    expect(both.spec.resources.memMiB).to.equal(8192);
    expect(both.spec.extraResources).to.deep.equal({ vmem: '16gb' });
  });

  it('several resources on one directive line, with or without a second -l', () => {
    const r = job(['job.sh'], '#PBS -l nodes=1:ppn=12,walltime=24:00:00 -l mem=15GB\n#PBS -l file=1gb cput=10:00:00\necho\n');
    expect(r.spec.resources).to.deep.equal({ ncpus: 12, memMiB: 15360 });
    expect(r.spec.walltimeSec).to.equal(86400);
    expect(r.spec.extraResources).to.deep.equal({ file: '1gb', cput: '10:00:00' });
  });

  it('-W max_run_subjobs throttles an array', () => {
    expect(job(['-J', '1-4', '-W', 'max_run_subjobs=2', '--', 'x']).array).to.deep.equal({ indices: [1, 2, 3, 4], max: 2 });
  });

  it('custom resources: refused unless declared', () => {
    expect(refusal(['-l', 'matlab=1', '--', 'x'])).to.equal(
      '-l: unknown resource "matlab"; an administrator can declare it in quotas.yaml (resources: [matlab])',
    );
    const r = job(['-l', 'matlab=1', '--', 'x'], 'echo\n', { customResources: ['matlab'] });
    expect(r.spec.extraResources).to.deep.equal({ matlab: '1' });
    expect(r.warnings).to.deep.equal([]);
  });

  it('a script on stdin is named STDIN; a terminal stdin is refused', () => {
    expect(parseQsub(['-N', 'x'], ctx('echo\n', { readFile: () => undefined }))).to.deep.equal({ kind: 'needFile', needFile: '-' });
    const r = job([], '#PBS -l ncpus=2\nhostname\n');
    expect(r.spec.name).to.equal('STDIN');
    expect(r.spec.resources.ncpus).to.equal(2);
    expect(r.spec.script).to.equal('#PBS -l ncpus=2\nhostname\n');
    expect(refusal([], '\n')).to.equal('no job script given: standard input was empty (give a script file, or gcqsub [options] -- command [args])');
  });

  it('every accepted-with-warning option says what Copper does, in one line', () => {
    const r = job([
      '-k',
      'oe',
      '-R',
      'oe',
      '-c',
      'n',
      '-u',
      'bob',
      '-n',
      '-X',
      '-f',
      '-x',
      '-b',
      '10',
      '-D',
      '/r',
      '-K',
      '5',
      '-T',
      'pro',
      '-L',
      'tasks=2',
      '-W',
      'sandbox=PRIVATE',
      '-W',
      'umask=022',
      '--',
      'x',
    ]);
    expect(r.warnings).to.have.length(15);
    for (const w of r.warnings)
      expect(w)
        .to.match(/^-[A-Za-z]\b.*(ignored|recorded)/)
        .and.not.include('\n');
    expect(r.spec.umask).to.equal('022');
    expect(refusal(['-G', '--', 'x'])).to.match(/^-G: interactive GUI jobs are not supported/);
  });
});

describe('capacity: a job is as big as it asks, up to the largest host', () => {
  it("refuses above the host with resource, request and the host's figure", () => {
    expect(neverFits({ ncpus: 16, memMiB: 18432 }, 4, 131072)).to.equal('mem=128gb exceeds the largest host (18gb)');
    expect(neverFits({ ncpus: 16, memMiB: 18432 }, 24, 1024)).to.equal('ncpus=24 exceeds the largest host (16)');
    expect(neverFits({ ncpus: 16, memMiB: 18432 }, 16, 18432)).to.equal(undefined);
  });
  it('records what was asked and what the clone has now', () => {
    const r = resolveAssignment({ ncpus: 12, memMiB: 16384 }, { memMiB: 512, vcpus: 1, maxVcpus: 8 }, { ncpus: 32, memMiB: 65536 });
    expect(r).to.deep.equal({ resources: { ncpus: 12, memMiB: 16384 }, assigned: { ncpus: 8, memMiB: 512 } });
    const small = resolveAssignment({ ncpus: 1, memMiB: 0 }, { memMiB: 512, vcpus: 1, maxVcpus: 8 }, { ncpus: 32, memMiB: 65536 });
    expect(small).to.deep.equal({ resources: { ncpus: 1, memMiB: 512 }, assigned: { ncpus: 1, memMiB: 512 } });
  });
});

function rec(over: Omit<Partial<JobRecord>, 'spec'> & { spec?: Partial<JobRecord['spec']> } = {}): JobRecord {
  const { spec, ...rest } = over;
  return {
    id: '7.srv',
    seq: 7,
    state: 'Q',
    queuedAt: Date.UTC(2024, 0, 1),
    runCount: 0,
    spec: {
      argv: ['x'],
      name: 'job',
      cwd: '/w',
      env: {},
      user: 'alice',
      group: 'g',
      headnode: 'hn',
      queue: 'workq',
      priority: 0,
      join: 'n',
      rerunnable: true,
      resources: { ncpus: 1, memMiB: 0 },
      submitHost: 'hn',
      ...spec,
    },
    ...rest,
  };
}

describe('gcqselect criteria', () => {
  it('matches user, states, name, queue, account, project and holds', () => {
    const a = rec({ spec: { accountName: 'acct', project: 'p1' }, state: 'H', holds: 'u' });
    const c = (x: Record<string, string>) => selectMatches(a, parseSelectCriteria(x));
    expect(c({ u: 'alice@hn,bob' })).to.equal(true);
    expect(c({ u: 'bob' })).to.equal(false);
    expect(c({ s: 'QH' })).to.equal(true);
    expect(c({ s: 'R' })).to.equal(false);
    expect(c({ N: 'job', q: 'workq@srv', A: 'acct', P: 'p1', h: 'u' })).to.equal(true);
    expect(c({ h: 'n' })).to.equal(false);
    expect(() => parseSelectCriteria({ s: 'Z' })).to.throw(UsageError, '-s Z: give job state letters');
  });
});

describe('qstat -f: the attributes PBS scripts set', () => {
  it('shows Account_Name, group_list, mail, shell, project, extras, assigned resources and array range', () => {
    const text = formatQstatFull(
      [
        rec({
          id: '7[].srv',
          array: { indices: [1, 3, 5, 7], max: 2 },
          spec: {
            accountName: 'acct',
            groupList: 'physics',
            mailPoints: 'abe',
            mailUsers: ['a@x', 'b@x'],
            shell: '/bin/bash',
            project: 'p1',
            umask: '022',
            extraResources: { cput: '10:00:00' },
            resources: { ncpus: 12, memMiB: 16384 },
            assigned: { ncpus: 8, memMiB: 512 },
          },
        }),
      ],
      { server: 'srv', timeZone: 'UTC' },
    );
    for (const line of [
      'Job Id: 7[].srv',
      '    Account_Name = acct',
      '    group_list = physics',
      '    Mail_Points = abe',
      '    Mail_Users = a@x,b@x',
      '    Resource_List.cput = 10:00:00',
      '    Resource_List.mem = 16gb',
      '    Resource_List.ncpus = 12',
      '    resources_assigned.mem = 512mb',
      '    resources_assigned.ncpus = 8',
      '    Shell_Path_List = /bin/bash',
      '    umask = 22',
      '    project = p1',
      '    array = True',
      '    array_indices_submitted = 1-7:2',
      '    max_run_subjobs = 2',
    ])
      expect(text.split('\n')).to.include(line);
  });
  it('writes array ranges as PBS does', () => {
    expect(formatArrayIndices([1, 2, 3])).to.equal('1-3');
    expect(formatArrayIndices([1, 11, 21])).to.equal('1-21:10');
    expect(formatArrayIndices([1, 2, 3, 7, 9, 10])).to.equal('1-3,7,9-10');
    expect(formatArrayIndices([4])).to.equal('4');
  });
});

describe('gc install-pbs-names', () => {
  it('writes executable qsub..qmove wrappers that run the gcq* tools, and removes only its own', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pbs-names-'));
    try {
      const r = installPbsNames(dir, '/opt/copper/dist/src/client/cli-client.js');
      expect(r.written.map((p) => p.slice(dir.length + 1)).sort()).to.deep.equal([
        'pbsnodes',
        'qalter',
        'qdel',
        'qhold',
        'qmove',
        'qrerun',
        'qrls',
        'qselect',
        'qsig',
        'qstat',
        'qsub',
      ]);
      expect(readFileSync(join(dir, 'qsig'), 'utf8')).to.contain('main("gcqsig", process.argv.slice(2), "qsig")');
      expect(statSync(join(dir, 'qstat')).mode & 0o111).to.not.equal(0);
      expect(readFileSync(join(dir, 'qstat'), 'utf8')).to.equal(wrapperText('qstat', '/opt/copper/dist/src/client/cli-client.js'));
      expect(readFileSync(join(dir, 'qstat'), 'utf8')).to.contain('main("gcqstat", process.argv.slice(2), "qstat")');
      installPbsNames(dir, '/opt/copper/dist/src/client/cli-client.js', true);
      expect(existsSync(join(dir, 'qsub'))).to.equal(false);
      writeFileSync(join(dir, 'qsub'), '#!/bin/sh\n# Torque\n');
      expect(() => installPbsNames(dir, '/x.js')).to.throw(UsageError, "qsub already exist and are not Copper's");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
