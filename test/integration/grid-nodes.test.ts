import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { until, type GcdProcess } from '../helpers/gcd-process.js';
import { NetnsGrid, type GridNode, fakeGridServerEnv } from '../helpers/netns-grid.js';

interface QstatJob {
  job_state: string;
  exec_host?: string;
  Exit_status?: number;
  comment?: string;
  run_count?: number | string;
}

interface NodeJson {
  name: string;
  state: string;
  ncpus: number;
  memMiB: number;
  usedNcpus: number;
  jobs: string[];
  comment: string;
}

/**
 * The grid with real processes: a server gcd and three `gcd --node` hosts, each in its own
 * network namespace, reaching the server's redis-server over TCP (with its password) on a
 * bridge the test makes. Test-double driver: commands run as processes of the node's gcd.
 */
describe('grid: nodes in network namespaces, real Redis over TCP (test-double driver)', function () {
  this.timeout(180_000);
  const grid = new NetnsGrid();
  let g: GcdProcess;
  const nodes: Record<string, GridNode> = {};
  // Made in before(): made at load time it would leak whenever mocha filters this suite out.
  let marks = '';

  const jobs = (...ids: string[]): Record<string, QstatJob> => {
    const r = g.tool('gcqstat', ['-x', '-t', '-f', '-F', 'json', ...ids]);
    if (r.status !== 0) throw new Error(`gcqstat: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { Jobs: Record<string, QstatJob> }).Jobs;
  };
  const nodeList = (): NodeJson[] => JSON.parse(g.tool('gc', ['nodes', '--json']).stdout) as NodeJson[];
  const hostOf = (j: QstatJob): string => (j.exec_host ?? '').split('/')[0];
  const sub = (...args: string[]): string => {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', ...args]);
    expect(r.status, r.stderr).to.equal(0);
    return r.stdout.trim();
  };

  before(async function () {
    marks = mkdtempSync(join(tmpdir(), 'copper-gn-marks-'));
    if (process.getuid?.() !== 0) throw new Error('the grid harness makes network namespaces: run as root');
    grid.up();
    g = await grid.startServer(fakeGridServerEnv(3000));
    nodes.n1 = await grid.addNode('n1', { ncpus: 3, memMiB: 4096 });
    nodes.n2 = await grid.addNode('n2', { ncpus: 3, memMiB: 8192 });
    nodes.n3 = await grid.addNode('n3', { ncpus: 3, memMiB: 2048 });
  });
  afterEach(function () {
    if (this.currentTest?.state !== 'failed') return;
    for (const n of grid.nodes) process.stdout.write(`--- ${n.name} log (tail)\n${n.log.slice(-3000)}\n`);
    process.stdout.write(`--- server log (tail)\n${g.log.slice(-3000)}\n`);
  });
  after(async function () {
    await grid.teardown();
    rmSync(marks, { recursive: true, force: true });
  });

  it("the server's Redis is on the bridge address only; each node has its own user, the server a password", function () {
    const url = new URL(grid.nodeRedisUrl());
    expect(url.hostname).to.equal(grid.serverAddress);
    expect(url.username + url.password, 'the nodes’ URL carries no credential').to.equal('');
    const conf = readFileSync(join(g.stateDir, 'redis', 'redis.conf'), 'utf8');
    expect(conf).to.match(new RegExp(`^bind ${grid.serverAddress.replace(/\./g, '\\.')}$`, 'm'));
    expect(conf).to.match(/^aclfile \S+users\.acl$/m);
    const acl = join(g.stateDir, 'redis', 'users.acl');
    expect(statSync(acl).mode & 0o777).to.equal(0o600);
    const users = readFileSync(acl, 'utf8');
    expect(users).to.match(/^user default on #[0-9a-f]{64} /m);
    expect(users).to.not.match(/nopass/);
    for (const n of ['n1', 'n2', 'n3']) expect(users).to.match(new RegExp(`^user node-${n} on .*#[0-9a-f]{64} .*-@all`, 'm'));
  });

  it('gc nodes lists the three hosts up, with their cores and memory', async function () {
    await until('three nodes up', () => nodeList().filter((n) => n.state === 'up').length === 3);
    const list = nodeList();
    expect(list.map((n) => [n.name, n.state, n.ncpus, n.memMiB])).to.deep.equal([
      ['n1', 'up', 3, 4096],
      ['n2', 'up', 3, 8192],
      ['n3', 'up', 3, 2048],
    ]);
    const table = g.tool('gc', ['nodes']).stdout.split('\n');
    expect(table[0]).to.match(/^NAME\s+STATE\s+JOBS\s+NCPUS\s+MEM\s+CACHE\s+COMMENT$/);
    expect(table[1]).to.match(/^n1\s+up\s+0\s+0\/3\s+0mb\/4gb\s+0$/);
    expect(g.tool('gc', ['nodes', '-a']).stdout).to.contain('n2\n     state = free\n');
  });

  it('an 8-task array spreads over the three hosts; exec_host names each', async function () {
    const id = sub('-J', '1-8', '-N', 'spread', '--', 'sleep', '2');
    const seq = id.split('[')[0];
    const tasks = await until(
      'array done',
      () => {
        const all = Object.entries(jobs()).filter(([k]) => k.startsWith(`${id.split('[')[0]}[`) && /\[\d+\]/.test(k));
        return all.length === 8 && all.every(([, j]) => j.job_state === 'F' || j.job_state === 'X') ? all : undefined;
      },
      60_000,
    );
    const hosts = new Set(tasks.map(([, j]) => hostOf(j)));
    expect([...hosts].sort(), JSON.stringify(tasks)).to.deep.equal(['n1', 'n2', 'n3']);
    for (const [, j] of tasks) expect(j.Exit_status).to.equal(0);
    expect(seq).to.match(/^\d+$/);
  });

  it('gc node offline: the host takes nothing new; online again: it does', async function () {
    const off = g.tool('gc', ['node', 'offline', 'n3', '-C', 'disk swap']);
    expect(off.status, off.stderr).to.equal(0);
    expect(off.stdout).to.equal('n3: offline (disk swap)\n');
    expect(nodeList().find((n) => n.name === 'n3')).to.include({ state: 'offline', comment: 'disk swap' });
    const id = sub('-J', '1-6', '-N', 'off', '--', 'sleep', '1');
    const tasks = await until(
      'array done',
      () => {
        const all = Object.entries(jobs()).filter(([k]) => k.startsWith(`${id.split('[')[0]}[`) && /\[\d+\]/.test(k));
        return all.length === 6 && all.every(([, j]) => j.job_state === 'F' || j.job_state === 'X') ? all : undefined;
      },
      60_000,
    );
    expect(tasks.map(([, j]) => hostOf(j))).not.to.include('n3');
    expect(g.tool('gc', ['node', 'online', 'n3']).stdout).to.equal('n3: up\n');
    const bad = g.tool('gc', ['node', 'offline', 'nosuch']);
    expect(bad.status).to.not.equal(0);
    expect(bad.stderr).to.equal('gc: unknown node nosuch (gc nodes lists them)\n');
  });

  it('gc node drain: running jobs finish, then the host is offline', async function () {
    g.tool('gc', ['node', 'offline', 'n1']);
    g.tool('gc', ['node', 'offline', 'n2']);
    const id = sub('-N', 'drainme', '--', 'sleep', '6');
    try {
      await until('job on n3', () => jobs(id)[id]?.job_state === 'R');
      expect(hostOf(jobs(id)[id])).to.equal('n3');
      await until('n3 reports the job', () =>
        nodeList()
          .find((n) => n.name === 'n3')
          ?.jobs.includes(id),
      );
      expect(g.tool('gc', ['node', 'drain', 'n3', '-C', 'kernel update']).stdout).to.equal('n3: draining (kernel update)\n');
      g.tool('gc', ['node', 'online', 'n1']);
      g.tool('gc', ['node', 'online', 'n2']);
      await until('job done', () => jobs(id)[id]?.job_state === 'F', 30_000);
      expect(jobs(id)[id].Exit_status).to.equal(0);
      await until('n3 offline', () => nodeList().find((n) => n.name === 'n3')?.state === 'offline', 10_000);
    } finally {
      for (const n of ['n1', 'n2', 'n3']) g.tool('gc', ['node', 'online', n]);
    }
  });

  it('kill -9 of a node: its -r y job runs again elsewhere once, its -r n job fails once, naming the node', async function () {
    g.tool('gc', ['node', 'offline', 'n1']);
    g.tool('gc', ['node', 'offline', 'n2']);
    const runs = (name: string): string[] => readFileSync(join(marks, name), 'utf8').split('\n').filter(Boolean);
    const rerun = sub('-r', 'y', '-N', 'again', '--', 'sh', '-c', `echo "$PBS_JOBID" >> ${marks}/again; exec sleep 5`);
    const lost = sub('-r', 'n', '-N', 'once', '--', 'sh', '-c', `echo "$PBS_JOBID" >> ${marks}/once; exec sleep 30`);
    await until('both running on n3', () => {
      const j = jobs(rerun, lost);
      return j[rerun]?.job_state === 'R' && j[lost]?.job_state === 'R';
    });
    expect([hostOf(jobs(rerun)[rerun]), hostOf(jobs(lost)[lost])]).to.deep.equal(['n3', 'n3']);
    await until('both commands started', () => runs('again').length === 1 && runs('once').length === 1);
    g.tool('gc', ['node', 'online', 'n1']);
    g.tool('gc', ['node', 'online', 'n2']);
    const t0 = Date.now();
    await nodes.n3.kill9();
    await until('n3 down', () => nodeList().find((n) => n.name === 'n3')?.state === 'down', 20_000);
    const downMs = Date.now() - t0;
    process.stdout.write(`      (n3 marked down ${downMs} ms after kill -9; GC_NODE_DEAD_MS=3000)\n`);
    expect(downMs).to.be.lessThan(3000 + 2000);
    await until('rerun finished', () => jobs(rerun)[rerun]?.job_state === 'F', 60_000);
    await until('lost job finished', () => jobs(lost)[lost]?.job_state === 'F', 10_000);
    const a = jobs(rerun)[rerun];
    expect(a.Exit_status, JSON.stringify(a)).to.equal(0);
    expect(['n1', 'n2']).to.include(hostOf(a));
    expect(Number(a.run_count)).to.equal(2);
    expect(runs('again')).to.deep.equal([rerun, rerun]);
    const b = jobs(lost)[lost];
    expect(b.Exit_status).to.equal(-3);
    expect(b.comment).to.equal('node n3 stopped answering while the job ran; not rerunnable (-r n), so not run again');
    expect(runs('once')).to.deep.equal([lost]);
    // Nothing runs twice later on: a few more heartbeats and monitor ticks change nothing.
    await new Promise((r) => setTimeout(r, 3000));
    expect(runs('again')).to.have.length(2);
    expect(jobs(rerun)[rerun].job_state).to.equal('F');
  });

  it('a node that comes back rejoins up and leaves settled jobs as they are', async function () {
    const before = jobs();
    await nodes.n3.start();
    await until('n3 up again', () => nodeList().find((n) => n.name === 'n3')?.state === 'up');
    await new Promise((r) => setTimeout(r, 1000));
    const after = jobs();
    for (const [id, j] of Object.entries(before)) expect(after[id]?.job_state, id).to.equal(j.job_state);
  });

  it('a cut link: the job reruns elsewhere once; the host, back, drops its stale run and rejoins', async function () {
    g.tool('gc', ['node', 'offline', 'n1']);
    g.tool('gc', ['node', 'offline', 'n3']);
    const id = sub('-r', 'y', '-N', 'cut', '--', 'sh', '-c', `echo "$PBS_JOBID" >> ${marks}/cut; exec sleep 8`);
    await until('running on n2', () => jobs(id)[id]?.job_state === 'R');
    expect(hostOf(jobs(id)[id])).to.equal('n2');
    await until('command started', () => readFileSync(join(marks, 'cut'), 'utf8').length > 0);
    g.tool('gc', ['node', 'online', 'n1']);
    g.tool('gc', ['node', 'online', 'n3']);
    const t0 = Date.now();
    grid.link(nodes.n2, false);
    await until('n2 down', () => nodeList().find((n) => n.name === 'n2')?.state === 'down', 20_000);
    process.stdout.write(`      (n2 marked down ${Date.now() - t0} ms after its link was cut)\n`);
    await until(
      'rerun started elsewhere',
      () => {
        const j = jobs(id)[id];
        return j?.job_state === 'R' && hostOf(j) !== 'n2';
      },
      30_000,
    );
    grid.link(nodes.n2, true);
    await until('n2 back up', () => nodeList().find((n) => n.name === 'n2')?.state === 'up', 20_000);
    await until('job done', () => jobs(id)[id]?.job_state === 'F', 30_000);
    const j = jobs(id)[id];
    expect(['n1', 'n3']).to.include(hostOf(j));
    expect(j.Exit_status).to.equal(0);
    expect(Number(j.run_count)).to.equal(2);
    expect(readFileSync(join(marks, 'cut'), 'utf8').split('\n').filter(Boolean)).to.deep.equal([id, id]);
    expect(nodes.n2.log).to.contain('this node was declared down while it ran');
  });

  it('a server restart (its embedded Redis with it) loses nothing on any host', async function () {
    const id = sub('-r', 'y', '-N', 'calm', '--', 'sh', '-c', `echo "$PBS_JOBID" >> ${marks}/calm; exec sleep 6`);
    await until('running', () => jobs(id)[id]?.job_state === 'R');
    const host = hostOf(jobs(id)[id]);
    await g.stop();
    await g.start();
    await until('job done', () => jobs(id)[id]?.job_state === 'F', 60_000);
    const j = jobs(id)[id];
    expect(j.Exit_status, JSON.stringify(j)).to.equal(0);
    expect(hostOf(j)).to.equal(host);
    expect(Number(j.run_count)).to.equal(1);
    expect(readFileSync(join(marks, 'calm'), 'utf8').split('\n').filter(Boolean)).to.deep.equal([id]);
    await until('three nodes up', () => nodeList().filter((n) => n.state === 'up').length === 3);
  });

  it('a job asking more than any host has is refused, naming the largest host', function () {
    const mem = g.tool('gcqsub', ['--headnode', 'hn1', '-l', 'mem=16gb', '--', 'true']);
    expect(mem.status).to.not.equal(0);
    expect(mem.stderr).to.equal('gcqsub: mem=16gb exceeds the largest host (8gb)\n');
    const cpus = g.tool('gcqsub', ['--headnode', 'hn1', '-l', 'ncpus=4', '--', 'true']);
    expect(cpus.status).to.not.equal(0);
    expect(cpus.stderr).to.equal('gcqsub: ncpus=4 exceeds the largest host (3)\n');
  });
});
