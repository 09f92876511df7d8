import { expect } from 'chai';
import { hostname } from 'node:os';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * An accounting line split the way PBS's own readers do it (pbs-report, PBS's Python
 * accounting parsers): four fields on ';', then the message on spaces into key=value.
 * Written independently of Copper's parser on purpose.
 */
interface PbsRecord {
  date: string;
  type: string;
  id: string;
  fields: Record<string, string>;
}
function pbsParse(line: string): PbsRecord {
  const [date, type, id, ...rest] = line.split(';');
  const fields: Record<string, string> = {};
  for (const tok of rest.join(';').split(' ').filter(Boolean)) {
    const eq = tok.indexOf('=');
    fields[tok.slice(0, eq)] = tok.slice(eq + 1);
  }
  return { date: date, type: type, id: id, fields };
}

function records(g: GcdProcess): PbsRecord[] {
  const dir = join(g.stateDir, 'accounting');
  return readdirSync(dir)
    .sort()
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean).map(pbsParse));
}

describe('accounting: PBS accounting files, gctracejob and gcseff (test-double driver, real Redis)', function () {
  this.timeout(120_000);
  let g: GcdProcess;

  beforeEach(async function () {
    g = new GcdProcess({
      GC_DRIVER: 'fake',
      GC_FAKE_HEADNODES: 'hn1:alice:physics,hn2:bob:chem',
      GC_SERVER_NAME: 'srv',
      GC_KILL_DELAY_MS: '500',
      GC_LOCK_MS: '3000',
    });
    // History expires 3 s after a job ends: the accounting file must outlive it.
    mkdirSync(join(g.stateDir, 'config'), { recursive: true });
    writeFileSync(join(g.stateDir, 'config', 'quotas.yaml'), 'history_ttl: 3s\n');
    await g.start();
  });
  afterEach(async function () {
    await g.cleanup();
  });

  it('writes Q, S, E for a job that ran and D (then E) for deleted ones, in the fields PBS tools read', async function () {
    const ran = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'calc', '-l', 'walltime=00:10:00', '-W', 'block=true', '--', 'sh', '-c', 'exit 3']);
    expect(ran.status, ran.stderr).to.equal(3);
    const queued = g.tool('gcqsub', ['--headnode', 'hn1', '-h', '--', 'true']);
    expect(queued.stdout).to.equal('2.srv\n');
    const running = g.tool('gcqsub', ['--headnode', 'hn1', '--', 'sleep', '191']);
    expect(running.stdout).to.equal('3.srv\n');
    await until('3.srv running', () => / R workq/.test(g.tool('gcqstat', ['3']).stdout));
    expect(g.tool('gcqdel', ['2', '3']).status).to.equal(0);
    await until('3.srv ended in the accounting file', () => records(g).some((r) => r.id === '3.srv' && r.type === 'E'));

    const files = readdirSync(join(g.stateDir, 'accounting'));
    const d = new Date();
    expect(files).to.deep.equal([`${d.getFullYear()}${String(d.getMonth() + 1).padStart(2, '0')}${String(d.getDate()).padStart(2, '0')}`]);
    const all = records(g);
    for (const r of all) expect(r.date).to.match(/^\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d$/);
    const of = (id: string): string =>
      all
        .filter((r) => r.id === id)
        .map((r) => r.type)
        .join('');
    expect(of('1.srv')).to.equal('QSE');
    expect(of('2.srv')).to.equal('QD');
    expect(of('3.srv')).to.equal('QSDE');

    const e = all.find((r) => r.id === '1.srv' && r.type === 'E')!.fields;
    expect(e.user).to.equal('alice');
    expect(e.group).to.equal('physics');
    expect(e.jobname).to.equal('calc');
    expect(e.queue).to.equal('workq');
    expect(e.Exit_status).to.equal('3');
    expect(e.run_count).to.equal('1');
    expect(e['Resource_List.walltime']).to.equal('00:10:00');
    expect(e['Resource_List.ncpus']).to.equal('1');
    // exec_host: the compute host (this gcd, GC_NODE_NAME: the host name); exec_vnode: the clone.
    expect(e.exec_host).to.equal(`${hostname().split('.')[0]}/0`);
    expect(e.exec_vnode).to.equal('(hn1-1:ncpus=1:mem=524288kb)');
    expect(e['resources_used.walltime']).to.match(/^\d\d:\d\d:\d\d$/);
    for (const t of ['ctime', 'qtime', 'etime', 'start', 'end']) expect(Number(e[t]), t).to.be.within(Date.now() / 1000 - 120, Date.now() / 1000 + 1);
    expect(Number(e.ctime)).to.be.at.most(Number(e.start));
    expect(Number(e.start)).to.be.at.most(Number(e.end));
    expect(all.find((r) => r.id === '2.srv' && r.type === 'D')!.fields.requestor).to.match(/^alice@/);
    expect(all.find((r) => r.id === '1.srv' && r.type === 'Q')!.fields).to.deep.equal({ queue: 'workq' });
  });

  it("gctracejob and gcseff read the accounting files once the job's history has expired", async function () {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'eff', '-W', 'block=true', '--', 'sh', '-c', 'sleep 1.2']);
    expect(r.status, r.stderr).to.equal(0);
    const live = g.tool('gctracejob', ['1']);
    expect(live.status, live.stderr).to.equal(0);
    expect(live.stdout).to.match(/^Job: 1\.srv\n\n/);
    expect(live.stdout).to.match(/S {4}Job Queued at request of alice@\S+, owner = alice, job name = eff, queue = workq/);
    expect(live.stdout).to.match(/S {4}Job ended: Exit_status=0/);

    await until('history expired', () => g.tool('gcqstat', ['-x', '1']).status === 153, 20_000);
    const t = g.tool('gctracejob', ['1.srv']);
    expect(t.status, t.stderr).to.equal(0);
    expect(t.stdout).to.contain('history in Redis has expired');
    const types = [...t.stdout.matchAll(/ A {4}([QSE]) /g)].map((m) => m[1]).join('');
    expect(types).to.equal('QSE');

    const s = g.tool('gcseff', ['1']);
    expect(s.status, s.stderr).to.equal(0);
    expect(s.stdout).to.contain('Job ID: 1.srv\nUser/Group: alice/physics\nState: COMPLETED (exit code 0)\nCores: 1\n');
    expect(s.stdout).to.match(/Job Wall-clock time: 00:00:0[12]\n/);

    const none = g.tool('gctracejob', ['999']);
    expect(none.status).to.equal(153);
    expect(none.stderr).to.equal('gctracejob: Unknown Job Id 999\n');
  });
});
