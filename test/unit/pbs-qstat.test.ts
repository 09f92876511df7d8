import { expect } from 'chai';
import type { JobSpec } from '../../src/queue/job.js';
import {
  displayJobId,
  formatCtime,
  formatQstatAlternate,
  formatQstatFull,
  formatQstatJson,
  formatQstatTable,
  jobAttributes,
  toPbsJson,
} from '../../src/pbs/qstat-format.js';
import type { QstatJob } from '../../src/pbs/qstat-format.js';

const T0 = Date.UTC(2024, 5, 13, 9, 0, 0); // Thu 13 June 2024 09:00:00 UTC
const OPTS = { server: 'copper', timeZone: 'UTC', now: T0 + 10 * 60_000 };

function spec(over: Partial<JobSpec> = {}): JobSpec {
  return {
    argv: ['./run'],
    name: 'sim',
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
    ...over,
  };
}

function record(id: string, over: Partial<QstatJob> = {}, specOver: Partial<JobSpec> = {}): QstatJob {
  return { id, seq: Number(id), spec: spec(specOver), state: 'Q', queuedAt: T0, runCount: 0, ...over };
}

const running = record(
  '12',
  {
    state: 'R',
    startedAt: T0 + 60_000,
    runCount: 1,
    outputPath: '/home/alice/work/a_rather_long_job_name.o12',
    usage: { cputSec: 125, walltimeSec: 330, memKiB: 2048 },
    comment: 'Job run at Thu Jun 13 at 09:01 on hn-alice-c3',
  },
  { name: 'a_rather_long_job_name', walltimeSec: 3600, join: 'oe', resources: { ncpus: 4, memMiB: 8192 }, env: { OMP_NUM_THREADS: '4' } },
);
const queued = record('13', { reason: 'Not Running: max_run limit reached for user alice' }, { name: 'short' });
const finished = record(
  '11',
  { state: 'F', startedAt: T0 - 3_600_000, endedAt: T0 - 1_800_000, runCount: 1, exitStatus: 271, comment: 'Job deleted by alice' },
  { name: 'done', priority: -5, rerunnable: false, stdoutPath: '/tmp/done.out', stderrPath: '/tmp/done.err' },
);

describe('pbs qstat: default table', () => {
  it('renders PBS header, columns, truncation and time use', () => {
    expect(formatQstatTable([running, queued], OPTS)).to.equal(
      [
        'Job id            Name             User              Time Use S Queue',
        '----------------  ---------------- ----------------  -------- - -----',
        '12.copper         a_rather_long_j* alice             00:02:05 R workq',
        '13.copper         short            alice                    0 Q workq',
        '',
      ].join('\n'),
    );
  });

  it('cuts names of 16 characters (PBS quirk) but not of 15', () => {
    const rows = formatQstatTable([record('1', {}, { name: 'x'.repeat(15) }), record('2', {}, { name: 'y'.repeat(16) })], OPTS).split('\n');
    expect(rows[2]).to.equal(`1.copper          ${'x'.repeat(15)}  alice                    0 Q workq`);
    expect(rows[3]).to.equal(`2.copper          ${'y'.repeat(15)}* alice                    0 Q workq`);
  });

  it('keeps the first label of the server name and cuts long ids and users with "*"', () => {
    const long = record('1234567890123456', {}, { user: 'a_very_long_username_x', queue: 'q' });
    const row = formatQstatTable([long, record('5.srv.example.org')], OPTS).split('\n');
    expect(row[2]).to.equal('1234567890123456* sim              a_very_long_use*         0 Q q');
    expect(row[3]).to.equal('5.srv             sim              alice                    0 Q workq');
  });

  it('prints nothing for no jobs', () => expect(formatQstatTable([], OPTS)).to.equal(''));
});

describe('pbs qstat: alternate table (-a, -s)', () => {
  it('renders -a with requested and elapsed times', () => {
    expect(formatQstatAlternate([running, queued, finished], OPTS)).to.equal(
      [
        '',
        'copper:',
        `${' '.repeat(60)}Req'd  Req'd   Elap`,
        'Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time',
        '--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----',
        '12.copper       alice    workq    a_rather_*    --    1   4    8gb 01:00 R 00:05',
        '13.copper       alice    workq    short         --    1   1    --    --  Q   --',
        '11.copper       alice    workq    done          --    1   1    --    --  F 00:30',
        '',
      ].join('\n'),
    );
  });

  it('-s adds the comment (or the reason) under each job', () => {
    const lines = formatQstatAlternate([running, queued], { ...OPTS, comments: true }).split('\n');
    expect(lines.slice(5)).to.deep.equal([
      '12.copper       alice    workq    a_rather_*    --    1   4    8gb 01:00 R 00:05',
      '   Job run at Thu Jun 13 at 09:01 on hn-alice-c3',
      '13.copper       alice    workq    short         --    1   1    --    --  Q   --',
      '   Not Running: max_run limit reached for user alice',
      '',
    ]);
  });

  it('-s cuts a long comment to 74 characters with "..."', () => {
    const lines = formatQstatAlternate([record('1', { comment: 'c'.repeat(100) })], { ...OPTS, comments: true }).split('\n');
    expect(lines[6]).to.equal(`   ${'c'.repeat(71)}...`);
  });

  it('computes elapsed time from the start when no usage is known, and scales memory like PBS', () => {
    const r = record('1', { state: 'R', startedAt: T0 }, { resources: { ncpus: 2, memMiB: 10000 } });
    expect(formatQstatAlternate([r], OPTS).split('\n')[5]).to.equal('1.copper        alice    workq    sim           --    1   2   10gb   --  R 00:10');
  });
});

describe('pbs qstat: -f', () => {
  it('renders PBS attribute lines for a running job', () => {
    expect(formatQstatFull([running], OPTS)).to.equal(
      [
        'Job Id: 12.copper',
        '    Job_Name = a_rather_long_job_name',
        '    Job_Owner = alice@hn-alice',
        '    resources_used.cput = 00:02:05',
        '    resources_used.mem = 2048kb',
        '    resources_used.walltime = 00:05:30',
        '    job_state = R',
        '    queue = workq',
        '    server = copper',
        '    ctime = Thu Jun 13 09:00:00 2024',
        '    Hold_Types = n',
        '    Join_Path = oe',
        '    Output_Path = hn-alice:/home/alice/work/a_rather_long_job_name.o12',
        '    Priority = 0',
        '    qtime = Thu Jun 13 09:00:00 2024',
        '    Rerunable = True',
        '    Resource_List.mem = 8gb',
        '    Resource_List.ncpus = 4',
        '    Resource_List.nodect = 1',
        '    Resource_List.walltime = 01:00:00',
        '    stime = Thu Jun 13 09:01:00 2024',
        '    Variable_List = PBS_O_LOGNAME=alice,PBS_O_WORKDIR=/home/alice/work,',
        '\tPBS_O_QUEUE=workq,PBS_O_HOST=hn-alice,OMP_NUM_THREADS=4',
        '    comment = Job run at Thu Jun 13 at 09:01 on hn-alice-c3',
        '    run_count = 1',
        '    Submit_Host = hn-alice',
        '',
        '',
      ].join('\n'),
    );
  });

  it('shows Exit_status, end time, paths and held/rerun flags of a finished job', () => {
    const attrs = Object.fromEntries(jobAttributes(finished, OPTS).map((a) => [a.name, a.value]));
    expect(attrs).to.include({
      job_state: 'F',
      Exit_status: '271',
      Output_Path: 'hn-alice:/tmp/done.out',
      Error_Path: 'hn-alice:/tmp/done.err',
      Priority: '-5',
      Rerunable: 'False',
      stime: 'Thu Jun 13 08:00:00 2024',
      obittime: 'Thu Jun 13 08:30:00 2024',
      comment: 'Job deleted by alice',
    });
    expect(Object.fromEntries(jobAttributes(record('1', { state: 'H' }), OPTS).map((a) => [a.name, a.value]))).to.include({ Hold_Types: 'u' });
  });

  it('leaves out what is not known yet', () => {
    const names = jobAttributes(queued, OPTS).map((a) => (a.resource ? `${a.name}.${a.resource}` : a.name));
    expect(names).to.deep.equal([
      'Job_Name',
      'Job_Owner',
      'job_state',
      'queue',
      'server',
      'ctime',
      'Hold_Types',
      'Join_Path',
      'Priority',
      'qtime',
      'Rerunable',
      'Resource_List.ncpus',
      'Resource_List.nodect',
      'Variable_List',
      'comment',
      'run_count',
      'Submit_Host',
    ]);
  });

  it('wraps long values at commas and breaks over-long pieces, unless wide', () => {
    const env = { A: 'x'.repeat(90), B: '1,2' };
    const job = record('7', {}, { env });
    const line = formatQstatFull([job], OPTS)
      .split('\n')
      .filter((l) => l.startsWith('    Variable_List') || l.startsWith('\t'));
    expect(line).to.deep.equal([
      '    Variable_List = PBS_O_LOGNAME=alice,PBS_O_WORKDIR=/home/alice/work,',
      '\tPBS_O_QUEUE=workq,PBS_O_HOST=hn-alice,',
      `\tA=${'x'.repeat(68)}`,
      `\t${'x'.repeat(22)},B=1\\,2`,
    ]);
    const wide = formatQstatFull([job], { ...OPTS, wide: true })
      .split('\n')
      .find((l) => l.startsWith('    Variable_List'));
    expect(wide).to.equal(
      `    Variable_List = PBS_O_LOGNAME=alice,PBS_O_WORKDIR=/home/alice/work,PBS_O_QUEUE=workq,PBS_O_HOST=hn-alice,A=${'x'.repeat(90)},B=1\\,2`,
    );
  });

  it('separates jobs by a blank line and prints nothing for none', () => {
    const text = formatQstatFull([queued, finished], OPTS);
    expect(text.match(/^Job Id: .*$/gm)).to.deep.equal(['Job Id: 13.copper', 'Job Id: 11.copper']);
    expect(text).to.contain('    Submit_Host = hn-alice\n\nJob Id: 11.copper\n');
    expect(formatQstatFull([], OPTS)).to.equal('');
  });
});

describe('pbs qstat: -f -F json', () => {
  it('uses PBS layout: 4-space indent, no space after ":", numbers as numbers', () => {
    const text = formatQstatJson([queued], { ...OPTS, version: '0.1.0' });
    expect(text).to.equal(
      [
        '{',
        '    "timestamp":1718269800,',
        '    "pbs_version":"0.1.0",',
        '    "pbs_server":"copper",',
        '    "Jobs":{',
        '        "13.copper":{',
        '            "Job_Name":"short",',
        '            "Job_Owner":"alice@hn-alice",',
        '            "job_state":"Q",',
        '            "queue":"workq",',
        '            "server":"copper",',
        '            "ctime":"Thu Jun 13 09:00:00 2024",',
        '            "Hold_Types":"n",',
        '            "Join_Path":"n",',
        '            "Priority":0,',
        '            "qtime":"Thu Jun 13 09:00:00 2024",',
        '            "Rerunable":"True",',
        '            "Resource_List":{',
        '                "ncpus":1,',
        '                "nodect":1',
        '            },',
        '            "Variable_List":{',
        '                "PBS_O_LOGNAME":"alice",',
        '                "PBS_O_WORKDIR":"/home/alice/work",',
        '                "PBS_O_QUEUE":"workq",',
        '                "PBS_O_HOST":"hn-alice"',
        '            },',
        '            "comment":"Not Running: max_run limit reached for user alice",',
        '            "run_count":0,',
        '            "Submit_Host":"hn-alice"',
        '        }',
        '    }',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('nests resources and variables and keeps Exit_status numeric', () => {
    const doc = JSON.parse(formatQstatJson([running, finished], OPTS)) as {
      pbs_version: string;
      Jobs: Record<string, Record<string, unknown>>;
    };
    expect(doc.pbs_version).to.equal('copper');
    expect(Object.keys(doc.Jobs)).to.deep.equal(['12.copper', '11.copper']);
    expect(doc.Jobs['12.copper']?.['resources_used']).to.deep.equal({ cput: '00:02:05', mem: '2048kb', walltime: '00:05:30' });
    expect(doc.Jobs['12.copper']?.['Resource_List']).to.deep.equal({ mem: '8gb', ncpus: 4, nodect: 1, walltime: '01:00:00' });
    expect((doc.Jobs['12.copper']?.['Variable_List'] as Record<string, unknown>)['OMP_NUM_THREADS']).to.equal(4);
    expect(doc.Jobs['11.copper']?.['Exit_status']).to.equal(271);
    expect(doc.Jobs['11.copper']?.['Priority']).to.equal(-5);
  });

  it('escapes strings and prints an empty job list as {}', () => {
    expect(toPbsJson({ a: 'say "hi"\n', b: {} })).to.equal('{\n    "a":"say \\"hi\\"\\n",\n    "b":{}\n}');
    expect(JSON.parse(formatQstatJson([], OPTS))).to.deep.equal({ timestamp: 1718269800, pbs_version: 'copper', pbs_server: 'copper', Jobs: {} });
  });
});

describe('pbs qstat: helpers', () => {
  it('formats dates like ctime(3), with a space-padded day', () => {
    expect(formatCtime(Date.UTC(2024, 5, 3, 7, 5, 9), 'UTC')).to.equal('Mon Jun  3 07:05:09 2024');
    expect(formatCtime(Date.UTC(2024, 0, 1, 0, 0, 0), 'UTC')).to.equal('Mon Jan  1 00:00:00 2024');
    expect(formatCtime(Date.UTC(2024, 0, 1, 0, 0, 0), 'Asia/Tokyo')).to.equal('Mon Jan  1 09:00:00 2024');
  });

  it('adds the server to bare ids only', () => {
    expect(displayJobId('12', 'copper')).to.equal('12.copper');
    expect(displayJobId('12[].copper', 'copper')).to.equal('12[].copper');
  });
});
