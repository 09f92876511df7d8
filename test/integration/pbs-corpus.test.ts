import { expect } from 'chai';
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GcdProcess } from '../helpers/gcd-process.js';

/**
 * The fixture corpus through the real submit path: the host's gcqsub (thin client) to a gcd
 * process (test-double driver, real redis-server), then `gcqstat -f -F json` must show what
 * each script asked. Jobs are submitted held (-h on the command line wins over the script), so
 * no fixture command ever runs on this machine.
 */
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/pbs/', import.meta.url));

type Attrs = Record<string, unknown> & { Resource_List?: Record<string, unknown> };

interface Expect {
  /** Attributes that must equal these (Resource_List compared key by key). */
  attrs: Attrs;
  /** One pattern per warning line, in any order (checked when given). */
  warnings?: RegExp[];
  /** -z: no id printed; found by gcqselect -N instead. */
  quiet?: string;
}

const ACCEPTED: Record<string, Expect> = {
  'torque-mpi-ppn24.pbs': {
    attrs: {
      Job_Name: 'wrf_d02',
      queue: 'batch',
      Join_Path: 'oe',
      Mail_Points: 'abe',
      Mail_Users: 'alice@example.org',
      Account_Name: 'atmos-2024',
      Shell_Path_List: '/bin/bash',
      Resource_List: { ncpus: 48, mem: '120gb', walltime: '36:00:00' },
      resources_assigned: { ncpus: 8, mem: '16gb' }, // the test double's maxmem and CPU slots
    },
    warnings: [/2 chunks are run as one job with 48 CPUs/],
  },
  'pbspro-project-group.pbs': {
    attrs: {
      Job_Name: 'align_reads',
      queue: 'workq',
      project: 'bio0123',
      group_list: 'physics',
      Account_Name: 'bio-grant-77',
      Mail_Points: 'ae',
      Mail_Users: 'alice@example.org,pi@example.org',
      Resource_List: { ncpus: 16, mem: '64gb', walltime: '12:00:00' },
    },
    warnings: [/group_list=physics recorded, not checked/],
  },
  'torque-array-pmem.pbs': {
    attrs: {
      Job_Name: 'param_scan',
      array: 'True',
      array_indices_submitted: '1-10',
      Resource_List: { ncpus: 4, mem: '8gb', pmem: '2gb', cput: '40:00:00', walltime: '10:00:00' },
    },
    warnings: [/-l cput=40:00:00: not enforced/, /-n ignored/, /-k oe ignored/],
  },
  'torque-one-line.pbs': {
    attrs: {
      Job_Name: 'matlab_batch',
      Rerunable: 'False',
      Resource_List: { ncpus: 12, mem: '15gb', vmem: '16gb', file: '10gb', software: 'matlab', walltime: '23:00:00' },
      Variable_List: { PBS_O_WORKDIR: '/home/alice/matlab' },
    },
    warnings: [/-l file=10gb: not enforced/, /-l software=matlab: the clone has the software/],
  },
  'pbspro-odds.pbs': {
    quiet: 'sweep_odds',
    attrs: {
      Job_Name: 'sweep_odds',
      Priority: 10,
      Mail_Points: 'n',
      umask: 27,
      array: 'True',
      array_indices_submitted: '1-91:10',
      max_run_subjobs: 5,
      Resource_List: { ncpus: 2, mem: '4gb', walltime: '01:30:00' },
    },
    warnings: [
      /select host=node12: ignored/,
      /umask=027 recorded/,
      /sandbox=PRIVATE ignored/,
      /-R oe ignored/,
      /-c n ignored/,
      /-u alice ignored/,
      /place=scatter ignored/,
    ],
  },
  'slurm-dual.sh': {
    attrs: { Job_Name: 'md_equil', Join_Path: 'oe', Resource_List: { ncpus: 8, mem: '32gb', walltime: '04:00:00' } },
    warnings: [],
  },
  'slurm-only.sh': {
    attrs: { Job_Name: 'slurm-only.sh', Resource_List: { ncpus: 1 } },
    warnings: [/#SBATCH lines are Slurm's and are not read/],
  },
  'torque-nodes.pbs': {
    attrs: { Job_Name: 'gromacs_md', queue: 'batch', Mail_Points: 'abe', Mail_Users: 'alice@example.org', Resource_List: { ncpus: 8, mem: '16gb' } },
    warnings: [],
  },
};

/** Refusals: exactly one stderr line naming file, line, directive and why; exit 2. */
const REFUSED: Record<string, string> = {
  'bad-above-host.pbs': 'gcqsub: mem=128gb exceeds the largest host (125gb)',
  'mpi-select.pbs': 'gcqsub: ncpus=128 exceeds the largest host (64)',
  'bad-custom-resource.pbs':
    'gcqsub: bad-custom-resource.pbs:5: #PBS -l matlab_lic=1: -l: unknown resource "matlab_lic"; an administrator can declare it in quotas.yaml (resources: [matlab_lic])',
  'bad-gpu-chunk.pbs':
    'gcqsub: bad-gpu-chunk.pbs:3: #PBS -l select=1:ncpus=4:ngpus=1: -l select: "ngpus" asks for GPUs or accelerators, which no Copper host has',
  'bad-shell.pbs': 'gcqsub: bad-shell.pbs:3: #PBS -S bash: -S bash: give the absolute path of a shell, e.g. /bin/bash',
  'bad-walltime.pbs': 'gcqsub: bad-walltime.pbs:3: #PBS -l walltime=1:75:00: -l walltime: "1:75:00" has minutes or seconds above 59',
  'bad-unknown-option.pbs': 'gcqsub: bad-unknown-option.pbs:4: #PBS -Y: unknown option -Y',
};

function subset(actual: unknown, wanted: unknown, path: string): void {
  if (wanted !== null && typeof wanted === 'object') {
    expect(actual, path).to.be.an('object');
    for (const [k, v] of Object.entries(wanted)) subset((actual as Record<string, unknown>)[k], v, `${path}.${k}`);
  } else {
    expect(actual, path).to.equal(wanted);
  }
}

describe('PBS/Torque/Slurm-style script corpus through gcqsub and gcqstat -f -F json (gcd process, real Redis)', function () {
  let g: GcdProcess;
  let work: string;

  before(async function () {
    g = new GcdProcess({
      GC_DRIVER: 'fake',
      GC_FAKE_HEADNODES: 'hn1:alice:physics',
      GC_SERVER_NAME: 'srv',
      GC_LOCK_MS: '3000',
      // A host of 64 CPUs and 125 GiB: 120gb jobs fit, 128gb ones never can.
      GC_CAPACITY_NCPUS: '64',
      GC_CAPACITY_MEM_MIB: String(125 * 1024),
    });
    const config = join(g.stateDir, 'config');
    mkdirSync(config, { recursive: true });
    writeFileSync(join(config, 'quotas.yaml'), 'queues:\n  workq: {}\n  batch: {}\ndefault_queue: workq\nresources: [licence_abaqus]\n');
    work = join(g.stateDir, 'work');
    mkdirSync(work);
    for (const f of readdirSync(FIXTURES)) copyFileSync(join(FIXTURES, f), join(work, f));
    await g.start();
  });
  after(async function () {
    await g.cleanup();
  });

  function stat(id: string): Attrs {
    const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
    expect(r.status).to.equal(0, r.stderr);
    const doc = JSON.parse(r.stdout) as { Jobs: Record<string, Attrs> };
    return doc.Jobs[id];
  }

  for (const [file, want] of Object.entries(ACCEPTED)) {
    it(`${file}: accepted; gcqstat -f -F json shows what it asked`, function () {
      const r = g.tool('gcqsub', ['--headnode', 'hn1', '-h', file], { cwd: work });
      expect(r.status).to.equal(0, r.stderr);
      let id = r.stdout.trim();
      if (want.quiet !== undefined) {
        expect(r.stdout).to.equal('', '-z prints no job id');
        const sel = g.tool('gcqselect', ['-N', want.quiet]);
        expect(sel.status).to.equal(0, sel.stderr);
        id = sel.stdout.trim();
      }
      expect(id).to.match(/^\d+(\[\])?\.srv$/);
      const warnings = r.stderr.split('\n').filter((l) => l !== '');
      for (const w of warnings) expect(w).to.match(/^gcqsub: warning: /);
      if (want.warnings) {
        expect(warnings, r.stderr).to.have.length(want.warnings.length);
        for (const re of want.warnings)
          expect(
            warnings.some((w) => re.test(w)),
            `${re} in:\n${r.stderr}`,
          ).to.equal(true);
      }
      subset(stat(id), want.attrs, file);
      expect(g.tool('gcqdel', [id]).status).to.equal(0);
    });
  }

  for (const [file, line] of Object.entries(REFUSED)) {
    it(`${file}: refused with one line`, function () {
      const before = g.tool('gcqselect', ['-x']).stdout;
      const r = g.tool('gcqsub', ['--headnode', 'hn1', '-h', file], { cwd: work });
      expect(r.status).to.equal(2);
      expect(r.stdout).to.equal('');
      expect(r.stderr).to.equal(`${line}\n`);
      expect(g.tool('gcqselect', ['-x']).stdout).to.equal(before, 'nothing queued');
    });
  }

  it('an unknown queue is refused as PBS refuses it; a declared custom resource is recorded', function () {
    const q = g.tool('gcqsub', ['--headnode', 'hn1', '-q', 'nosuch', '--', 'true']);
    expect(q.status).to.equal(2);
    expect(q.stderr).to.equal('gcqsub: Unknown queue "nosuch"; queues: workq, batch\n');
    const c = g.tool('gcqsub', ['--headnode', 'hn1', '-h', '-l', 'licence_abaqus=2', '--', 'true']);
    expect(c.status).to.equal(0, c.stderr);
    expect(c.stderr).to.equal('');
    const id = c.stdout.trim();
    subset(stat(id), { Resource_List: { licence_abaqus: 2 } }, 'custom');
    g.tool('gcqdel', [id]);
  });

  it('a script on standard input (gcqsub < job.sh, echo cmd | gcqsub) is a job named STDIN', function () {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', '-h'], { cwd: work, input: '#!/bin/sh\n#PBS -N piped\n#PBS -l walltime=0:10:00\necho hi\n' });
    expect(r.status).to.equal(0, r.stderr);
    subset(stat(r.stdout.trim()), { Job_Name: 'piped', Resource_List: { walltime: '00:10:00' } }, 'stdin');
    const e = g.tool('gcqsub', ['--headnode', 'hn1', '-h'], { cwd: work, input: 'echo from a pipe\n' });
    expect(e.status).to.equal(0, e.stderr);
    subset(stat(e.stdout.trim()), { Job_Name: 'STDIN' }, 'echo');
    g.tool('gcqdel', [r.stdout.trim(), e.stdout.trim()]);
  });

  it('gcqselect prints ids one per line by user, state, name and queue; qstat of an unknown id exits 153', function () {
    const a = g.tool('gcqsub', ['--headnode', 'hn1', '-h', '-N', 'sel_a', '-q', 'batch', '--', 'true']).stdout.trim();
    const b = g.tool('gcqsub', ['--headnode', 'hn1', '-h', '-N', 'sel_b', '--', 'true']).stdout.trim();
    expect(g.tool('gcqselect', ['-N', 'sel_a']).stdout).to.equal(`${a}\n`);
    expect(g.tool('gcqselect', ['-q', 'batch', '-s', 'H']).stdout).to.equal(`${a}\n`);
    expect(g.tool('gcqselect', ['-u', 'alice', '-s', 'H']).stdout.split('\n')).to.include.members([a, b]);
    expect(g.tool('gcqselect', ['-u', 'bob']).stdout).to.equal('');
    expect(g.tool('gcqselect', ['-s', 'Z']).status).to.equal(2);
    const u = g.tool('gcqstat', ['-f', '999']);
    expect(u.status).to.equal(153);
    expect(u.stderr).to.equal('gcqstat: Unknown Job Id 999\n');
    g.tool('gcqdel', [a, b]);
  });
});
