import { expect } from 'chai';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * The rest of PBS's daily commands against a real gcd and a real Redis, with the test-double
 * driver (a "clone" is a host process group; pause/resume are SIGSTOP/SIGCONT of it):
 * gcqsig, gcqrerun, gcqmove / gcqalter -q, gcqstat -Q -B -n -1 -w -H -i -r and the -s
 * verdict, gcqdel -x and -W force. The same suspend and rerun with QEMU clones: test/vm/daily-cmds.
 */
interface JsonJob {
  job_state: string;
  Exit_status?: number;
  comment?: string;
  run_count?: number;
  queue?: string;
}

const QUOTAS = `queues:
  workq:
    priority: 0
  big:
    priority: 0
    max_job_ncpus: 2
    max_queued: 1
  closed:
    max_running: 0
default_queue: workq
`;

describe('PBS daily commands: gcqsig, gcqrerun, gcqmove, gcqstat views, gcqdel -x/-W force (test-double driver)', function () {
  this.timeout(120_000);
  let g: GcdProcess;
  const json = (...ids: string[]): Record<string, JsonJob> => {
    const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', ...ids]);
    if (r.status !== 0) throw new Error(`gcqstat failed (${r.status}): ${r.stderr}`);
    return (JSON.parse(r.stdout) as { Jobs: Record<string, JsonJob> }).Jobs;
  };
  const state = (id: string): string | undefined => json()[id]?.job_state;
  const sub = (...args: string[]): string => {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', ...args]);
    expect(r.status, r.stderr).to.equal(0);
    return r.stdout.trim();
  };
  const count = (f: string): number => (existsSync(f) ? Number(readFileSync(f, 'utf8').trim() || 0) : 0);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** A job that writes an increasing counter to `file` every 0.2 s. */
  const counter = (file: string): string[] => ['--', 'sh', '-c', `i=0; while :; do i=$((i+1)); echo $i > ${file}; sleep 0.2; done`];

  beforeEach(async function () {
    g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_KILL_DELAY_MS: '3000', GC_SERVER_NAME: 'srv', GC_CAPACITY_NCPUS: '8' });
    mkdirSync(join(g.stateDir, 'config'), { recursive: true });
    writeFileSync(join(g.stateDir, 'config', 'quotas.yaml'), QUOTAS);
    await g.start();
  });
  afterEach(async function () {
    await g.cleanup();
  });

  it('gcqsig -s suspend stops the job (state S, no progress) and its walltime; resume continues both', async function () {
    const file = join(g.stateDir, 'count');
    const id = sub('-l', 'walltime=00:00:04', ...counter(file));
    await until('counting', () => count(file) >= 3);
    const s = g.tool('gcqsig', ['-s', 'suspend', id]);
    expect(s.status, s.stderr).to.equal(0);
    expect(state(id)).to.equal('S');
    expect(g.tool('gcqstat', []).stdout).to.match(new RegExp(`^${id.split('.')[0]}\\.srv .* S workq$`, 'm'));
    const frozen = count(file);
    await sleep(5000); // longer than the walltime: a suspended job's clock does not run
    expect(count(file)).to.equal(frozen, 'no progress while suspended');
    expect(state(id)).to.equal('S', 'walltime did not expire while suspended');
    const again = g.tool('gcqsig', ['-s', 'suspend', id]);
    expect(again.status).to.not.equal(0);
    expect(again.stderr.trim()).to.equal(`gcqsig: job ${id} is already suspended`);
    const r = g.tool('gcqsig', ['-s', 'resume', id]);
    expect(r.status, r.stderr).to.equal(0);
    expect(state(id)).to.equal('R');
    await until('counting again', () => count(file) > frozen + 2);
    // The walltime clock runs on with what was left (4 s minus the ~1 s before suspending).
    await until('walltime reached', () => state(id) === 'F', 15_000);
    expect(json(id)[id].Exit_status).to.equal(-29);
  });

  it("gcqsig -s SIG reaches the job's process group; bad input and wrong states get one line", async function () {
    const mark = join(g.stateDir, 'usr1');
    const id = sub('--', 'sh', '-c', `trap 'echo got >> ${mark}' USR1; while :; do sleep 0.1; done`);
    await until('running', () => state(id) === 'R');
    await sleep(300); // the trap is set
    const r = g.tool('gcqsig', ['-s', 'SIGUSR1', id]);
    expect(r.status, r.stderr).to.equal(0);
    await until('trap ran', () => existsSync(mark) && readFileSync(mark, 'utf8') === 'got\n');
    expect(g.tool('gcqsig', ['-s', '10', id]).status).to.equal(0);
    await until('trap ran twice', () => readFileSync(mark, 'utf8') === 'got\ngot\n');
    const bad = g.tool('gcqsig', ['-s', 'NOPE', id]);
    expect(bad.status).to.not.equal(0);
    expect(bad.stderr.trim().split('\n')).to.have.length(1);
    expect(bad.stderr).to.match(/^gcqsig: -s NOPE: not a signal/);
    const held = sub('-h', '--', 'true');
    const q = g.tool('gcqsig', ['-s', 'suspend', held]);
    expect(q.status).to.not.equal(0);
    expect(q.stderr.trim()).to.equal(`gcqsig: Request invalid for state of job ${held} (H): only running jobs can be signalled`);
    expect(g.tool('gcqsig', ['-s', 'resume', id]).stderr.trim()).to.equal(`gcqsig: job ${id} is not suspended`);
    expect(g.tool('gcqdel', [id]).status).to.equal(0);
    await until('deleted', () => state(id) === 'F');
    expect(json(id)[id].Exit_status).to.equal(271);
  });

  it('gcqdel of a suspended job ends it (the clone is let run to take SIGTERM)', async function () {
    const file = join(g.stateDir, 'c2');
    const id = sub(...counter(file));
    await until('counting', () => count(file) >= 2);
    expect(g.tool('gcqsig', ['-s', 'suspend', id]).status).to.equal(0);
    const t0 = Date.now();
    expect(g.tool('gcqdel', [id]).status).to.equal(0);
    await until('deleted', () => state(id) === 'F', 10_000);
    expect(Date.now() - t0).to.be.below(2500, 'SIGTERM was taken at once, no kill delay');
    expect(json(id)[id].Exit_status).to.equal(256 + 15);
  });

  it('gcqrerun stops a running job and runs it again from the same snapshot: run_count 2', async function () {
    const marks = join(g.stateDir, 'runs');
    // The first run waits (to be rerun); the second ends at once.
    const id = sub('-N', 'again', '--', 'sh', '-c', `n=$(cat ${marks} 2>/dev/null | wc -l); echo run >> ${marks}; [ $n -ge 1 ] || sleep 30`);
    await until('running', () => state(id) === 'R' && existsSync(marks));
    expect(json(id)[id].run_count).to.equal(1);
    const r = g.tool('gcqrerun', [id]);
    expect(r.status, r.stderr).to.equal(0);
    await until('finished', () => state(id) === 'F', 20_000);
    const j = json(id)[id];
    expect(j.Exit_status).to.equal(0, j.comment);
    expect(j.run_count).to.equal(2);
    expect(readFileSync(marks, 'utf8')).to.equal('run\nrun\n');
    // The snapshot was kept for the second run and released after it.
    await until('snapshot released', () => readdirSync(join(g.stateDir, 'fake-snapshots')).length === 0);
    const none = g.tool('gcqrerun', [id]);
    expect(none.status).to.not.equal(0);
    expect(none.stderr.trim()).to.equal(`gcqrerun: Request invalid for state of job ${id} (F): only running jobs can be rerun`);
    const norerun = sub('-r', 'n', '--', 'sleep', '30');
    await until('running', () => state(norerun) === 'R');
    expect(g.tool('gcqrerun', [norerun]).stderr.trim()).to.equal(`gcqrerun: job ${norerun} is not rerunnable (submitted with -r n)`);
  });

  it("gcqmove and gcqalter -q move jobs that have not started; the destination's limits apply", async function () {
    const a = sub('-h', '--', 'true');
    const b = sub('-h', '--', 'true');
    const m = g.tool('gcqmove', ['big', a]);
    expect(m.status, m.stderr).to.equal(0);
    expect(json(a)[a].queue).to.equal('big');
    expect(json(a)[a].job_state).to.equal('H', 'state unchanged');
    const full = g.tool('gcqalter', ['-q', 'big', b]);
    expect(full.status).to.not.equal(0);
    expect(full.stderr.trim()).to.match(/^gcqalter: would exceed max_queued=1 for queue big/);
    expect(json(b)[b].queue).to.equal('workq', 'a refused move changes nothing');
    const c = sub('-h', '-l', 'ncpus=4', '--', 'true');
    expect(g.tool('gcqmove', ['closed', c]).status).to.equal(0);
    expect(g.tool('gcqmove', ['workq', a]).status).to.equal(0);
    const tooBig = g.tool('gcqmove', ['big', c]);
    expect(tooBig.stderr.trim()).to.match(/^gcqmove: ncpus=4 exceeds max_job_ncpus=2 for queue big/);
    expect(g.tool('gcqmove', ['nosuch', c]).stderr.trim()).to.match(/^gcqmove: Unknown queue "nosuch"/);
    expect(g.tool('gcqalter', ['-q', 'big', b]).status).to.equal(0);
    // A released job runs in its new queue.
    expect(g.tool('gcqrls', [b]).status).to.equal(0);
    await until('b ran', () => state(b) === 'F');
    expect(json(b)[b].queue).to.equal('big');
    const run = sub('--', 'sleep', '30');
    await until('running', () => state(run) === 'R');
    expect(g.tool('gcqmove', ['big', run]).stderr.trim()).to.equal(`gcqmove: job ${run} is R: only jobs that have not started can be moved`);
  });

  it("gcqstat -Q and -B: PBS's layouts with limits and counts", async function () {
    sub('-h', '--', 'true');
    const run = sub('-l', 'ncpus=2', '--', 'sleep', '30');
    sub('-q', 'closed', '--', 'true');
    await until('running', () => state(run) === 'R');
    const q = g.tool('gcqstat', ['-Q']);
    expect(q.status, q.stderr).to.equal(0);
    expect(q.stdout).to.equal(
      [
        'Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type',
        '---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----',
        'workq                0     2 yes yes     0     1     1     0     0     0 Exec',
        'big                  0     0 yes yes     0     0     0     0     0     0 Exec',
        'closed               0     1 yes yes     1     0     0     0     0     0 Exec',
        '',
      ].join('\n'),
    );
    const qf = g.tool('gcqstat', ['-Q', '-f', 'big']).stdout;
    expect(qf).to.match(/^Queue: big\n {4}queue_type = Execution\n/);
    expect(qf).to.include('    max_queued = [o:PBS_ALL=1]\n');
    expect(qf).to.include('    resources_max.ncpus = 2\n');
    expect(qf).to.include('    enabled = True\n    started = True\n\n');
    expect(g.tool('gcqstat', ['-Q', '-f', 'closed']).stdout).to.include('    max_run = [o:PBS_ALL=0]\n');
    const b = g.tool('gcqstat', ['-B']);
    expect(b.stdout).to.equal(
      [
        'Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status',
        '---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------',
        'srv                  0     3     1     1     1     0     0     0 Active',
        '',
      ].join('\n'),
    );
    const bf = g.tool('gcqstat', ['-B', '-f']).stdout;
    expect(bf).to.match(/^Server: srv\n {4}server_state = Active\n/);
    expect(bf).to.include('    default_queue = workq\n');
    // A clone has its headnode's RAM (the test double's: 512 MiB).
    expect(bf).to.include('    resources_available.ncpus = 8\n    resources_assigned.mem = 524288kb\n    resources_assigned.ncpus = 2\n');
    expect(g.tool('gcqstat', ['-Q', 'nope']).stderr.trim()).to.equal('gcqstat: Unknown queue nope; queues: workq, big, closed');
  });

  it('gcqstat -n/-1 (exec host), -w, -H, -i, -r select and lay out jobs as PBS does', async function () {
    const held = sub('-N', 'waiting', '-h', '--', 'true');
    const run = sub('-N', 'busy', '-l', 'ncpus=2', '--', 'sleep', '30');
    const done = sub('-N', 'quick', '--', 'true');
    await until('running and done', () => state(run) === 'R' && state(done) === 'F');
    const n = (id: string) => id.split('.')[0];
    const alt = g.tool('gcqstat', ['-n']).stdout.split('\n');
    expect(alt.slice(0, 5)).to.deep.equal([
      '',
      'srv:',
      "                                                            Req'd  Req'd   Elap",
      'Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time',
      '--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----',
    ]);
    expect(alt[5]).to.match(new RegExp(`^${n(held)}\\.srv +alice +workq +waiting .* H +--$`));
    expect(alt[6]).to.equal('   --');
    expect(alt[7]).to.match(new RegExp(`^${n(run)}\\.srv +alice +workq +busy +-- +1 +2 +512mb +-- +R \\d\\d:\\d\\d$`));
    expect(alt[8]).to.equal(`   hn1-${n(run)}/0*2`);
    const one = g.tool('gcqstat', ['-n1', run]).stdout.trim().split('\n').pop()!;
    expect(one).to.match(new RegExp(` R \\d\\d:\\d\\d hn1-${n(run)}/0\\*2$`));
    expect(g.tool('gcqstat', ['-n', '-1', run]).stdout.trim().split('\n').pop()).to.equal(one);
    const rows = (args: string[]) =>
      g
        .tool('gcqstat', args)
        .stdout.split('\n')
        .filter((l) => /^\d+\.srv/.test(l))
        .map((l) => l.split('.')[0]);
    expect(rows(['-i'])).to.deep.equal([n(held)]);
    expect(rows(['-r'])).to.deep.equal([n(run)]);
    expect(rows(['-H'])).to.deep.equal([n(done)]);
    expect(g.tool('gcqstat', ['-H']).stdout).to.match(new RegExp(`quick .* F`));
    const wide = g.tool('gcqstat', ['-w']).stdout.split('\n');
    expect(wide[0]).to.equal('Job id                         Name            User            Time Use S Queue');
    expect(wide[1]).to.equal('------------------------------ --------------- --------------- -------- - ---------------');
    expect(wide[2]).to.match(new RegExp(`^${n(held)}\\.srv {${30 - n(held).length - 4}} waiting {9}alice {18}0 H workq$`));
    const wa = g.tool('gcqstat', ['-a', '-w']).stdout.split('\n');
    expect(wa[3]).to.equal('Job ID                         Username        Queue           Jobname         SessID   NDS  TSK   Memory Time  S Time');
    expect(wa[2]).to.equal(`${' '.repeat(99)}Req'd  Req'd   Elap`);
    expect(g.tool('gcqstat', ['-1']).stderr.trim()).to.equal('gcqstat: -1 goes with -n, -s or -f');
  });

  it('gcqstat -s gives a plain verdict for a job that can never run, and what would change that', async function () {
    const closed = sub('-N', 'never', '-q', 'closed', '--', 'true');
    await until('deferred', () => json(closed)[closed].comment !== undefined);
    const s = g.tool('gcqstat', ['-s', closed]).stdout.trim().split('\n');
    expect(s.pop()).to.equal(
      '   can never run: QueueMaxRun: queue closed has 0 of max_running=0; the admin raises max_running, or gcqmove it to another queue',
    );
    // The host shrank below what a queued job asks (gcd restarted with fewer cpus).
    const big = sub('-h', '-l', 'ncpus=8', '--', 'true');
    await g.stop();
    g.env.GC_CAPACITY_NCPUS = '4';
    await g.start();
    const v = g.tool('gcqstat', ['-s', '-1', big]).stdout.trim().split('\n').pop()!;
    expect(v).to.match(
      / H +-- +can never run: asks ncpus=8, the largest host has 4; lower -l ncpus to 4 or less \(gcqdel it and gcqsub again\), or the admin raises GC_CAPACITY_NCPUS$/,
    );
    // A job that only waits its turn gets no verdict.
    const ok = sub('-h', '--', 'true');
    expect(g.tool('gcqstat', ['-s', ok]).stdout).to.not.include('can never run');
  });

  it('gcqdel -x forgets finished jobs; -W force ends a running job at once', async function () {
    const done = sub('--', 'true');
    await until('done', () => state(done) === 'F');
    expect(g.tool('gcqdel', [done]).stderr.trim()).to.equal(`gcqdel: Request invalid for state of job ${done} (F)`);
    const x = g.tool('gcqdel', ['-x', done]);
    expect(x.status, x.stderr).to.equal(0);
    expect(json()[done]).to.equal(undefined, 'history gone');
    expect(g.tool('gcqstat', ['-x', done]).stderr.trim()).to.match(/^gcqstat: Unknown Job Id/i);
    const live = sub('--', 'sh', '-c', 'trap "" TERM; while :; do sleep 0.1; done');
    await until('running', () => state(live) === 'R');
    const t0 = Date.now();
    const f = g.tool('gcqdel', ['-W', 'force', live]);
    expect(f.status, f.stderr).to.equal(0);
    await until('ended', () => state(live) === 'F', 10_000);
    expect(Date.now() - t0).to.be.below(2500, 'no SIGTERM and kill delay: destroyed at once');
    expect(json(live)[live].comment).to.equal('deleted by gcqdel -W force: its clone was destroyed at once');
    const gone = sub('--', 'sleep', '30');
    await until('running', () => state(gone) === 'R');
    expect(g.tool('gcqdel', ['-x', '-Wforce', gone]).status).to.equal(0);
    expect(json()[gone]).to.equal(undefined, 'deleted and forgotten');
    expect(g.tool('gcqdel', ['-W', 'nope', gone]).stderr.trim()).to.equal('gcqdel: -W nope: only -W force is supported');
  });
});
