import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { setting } from '../../src/config/settings.js';
import { type GcdProcess } from '../helpers/gcd-process.js';
import { NetnsGrid, type GridNode } from '../helpers/netns-grid.js';

/**
 * The grid end to end with real clones under TCG: a server gcd (root namespace, a real headnode,
 * GC_SERVER_RUNS_JOBS=0, node API, NBD exporter and Redis on the harness bridge) and two
 * `gcd --node` hosts with the QEMU driver, each in its own network namespace with its own state
 * and RAM folders. Jobs submitted inside the headnode run in clones on the nodes, started from
 * the snapshot each node fetched over NBD, and their output comes home into the headnode.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface QstatJob {
  job_state: string;
  exec_host?: string;
  Exit_status?: number;
  comment?: string;
}

/** redis-cli's arguments for a redis://:PASSWORD@HOST:PORT URL (its -u wants a user name). */
function redisCliArgs(url: string): string[] {
  const u = new URL(url);
  return ['-h', u.hostname, '-p', u.port, '-a', decodeURIComponent(u.password), '--no-auth-warning'];
}

/** Snapshot ids a node's log says it fetched over NBD, one entry per fetch. */
function fetchesIn(log: string): string[] {
  return [...log.matchAll(/snapshot (\S+) fetched from \S+ (\{.*\})/g)].map((m) => `${m[1]} ${m[2]}`);
}

describe('grid: real clones on two remote hosts (netns harness) @vm', function () {
  this.timeout(1_200_000);
  const grid = new NetnsGrid();
  let g: GcdProcess;
  const nodes: GridNode[] = [];
  const port = (base: number): number => base + (process.pid % 1000);

  const jobs = (...ids: string[]): Record<string, QstatJob> => {
    const r = g.tool('gcqstat', ['-x', '-t', '-f', '-F', 'json', ...ids]);
    if (r.status !== 0) throw new Error(`gcqstat: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { Jobs: Record<string, QstatJob> }).Jobs;
  };
  const hostOf = (j: QstatJob | undefined): string => (j?.exec_host ?? '').split('/')[0];
  const inside = (script: string): { stdout: string; stderr: string; status: number } => g.inHeadnode('hn', script);
  const waitDone = async (id: string): Promise<QstatJob> => {
    for (let i = 0; i < 1200; i++) {
      const j = jobs(id)[id];
      if (j?.job_state === 'F') return j;
      await new Promise((r) => setTimeout(r, 1000));
    }
    throw new Error(`job ${id} did not finish`);
  };

  before(async function () {
    if (process.getuid?.() !== 0) throw new Error('the grid harness makes network namespaces: run as root');
    grid.up();
    g = await grid.startServer({
      GC_IMAGE_DIR: IMAGE_DIR,
      GC_SERVER_NAME: 'srv',
      GC_SERVER_RUNS_JOBS: '0',
      GC_NODE_API_ADDR: `${grid.serverAddress}:${port(7400)}`,
      GC_NBD_ADDR: `${grid.serverAddress}:${port(8400)}`,
      GC_NODE_HEARTBEAT_MS: '500',
      GC_KILL_DELAY_MS: '2000',
      GC_PLACEMENT_DEFER_MS: '3000',
    });
    const c = g.tool('gc', ['headnode', 'create', 'hn', '--owner', 'alice', '--mem', '512']);
    expect(c.status, c.stderr).to.equal(0);
    const s = g.tool('gc', ['headnode', 'start', 'hn']);
    expect(s.status, s.stderr).to.equal(0);
    for (const name of ['ge1', 'ge2']) {
      const t = g.tool('gc', ['node', 'token', name]);
      expect(t.status, t.stderr).to.equal(0);
      // The harness gives the n-th node ${subnet}.${10 + n}: its control listener is on that address.
      const address = `${grid.subnet}.${10 + grid.nodes.length + 1}`;
      nodes.push(
        await grid.addNode(name, {
          ncpus: 2,
          memMiB: 4096,
          env: {
            GC_NODE_TOKEN: t.stdout.trim(),
            GC_SERVER_URL: `http://${grid.serverAddress}:${port(7400)}`,
            GC_NODE_CONTROL_ADDR: `${address}:${port(9400)}`,
            GC_NODE_API_ADDR: '',
            GC_NBD_ADDR: '',
          },
        }),
      );
    }
  });

  afterEach(function () {
    if (this.currentTest?.state !== 'failed') return;
    for (const n of nodes) process.stdout.write(`--- ${n.name} log (tail)\n${n.log.slice(-4000)}\n`);
    process.stdout.write(`--- server log (tail)\n${g?.log.slice(-4000) ?? ''}\n`);
  });

  after(async function () {
    this.timeout(300_000);
    const dirs = [...nodes.flatMap((n) => [n.stateDir, n.ramDir]), ...(g ? [g.stateDir, setting('ramDir', g.env)] : [])];
    g?.tool('gc', ['headnode', 'destroy', 'hn']);
    // SIGTERM first: a node's shutdown empties its snapshot cache and stops its clones.
    for (const n of nodes) await n.stop().catch(() => undefined);
    await grid.teardown();
    const left = dirs.filter((d) => existsSync(d));
    const procs = spawnSync('pgrep', ['-af', 'qemu'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter((l) => dirs.some((d) => l.includes(d)));
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .filter((l) => dirs.some((d) => l.includes(d)));
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter((l) => l.startsWith(`gn${grid.tag}-`));
    expect({ left, procs, mounts, netns }).to.deep.equal({ left: [], procs: [], mounts: [], netns: [] });
  });

  it('both nodes registered, each with the URL of its control listener', function () {
    const list = JSON.parse(g.tool('gc', ['nodes', '--json']).stdout) as Array<{ name: string; state: string }>;
    expect(list.map((n) => [n.name, n.state]).sort()).to.deep.equal([
      ['ge1', 'up'],
      ['ge2', 'up'],
    ]);
    for (const n of nodes) {
      const url = spawnSync('redis-cli', [...redisCliArgs(grid.redisUrl()), 'hget', `copper:node:${n.name}`, 'controlUrl'], {
        encoding: 'utf8',
      }).stdout.trim();
      expect(url).to.equal(`http://${n.address}:${port(9400)}`);
    }
  });

  it('a job submitted in the headnode runs on a node; its output and a file it wrote come home', async function () {
    const sub = inside('mkdir -p /root/w && cd /root/w && gcqsub -N remote -W block=true -- sh -c "echo out-from-the-clone; echo made-on-a-node > made.txt"');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim().split('\n')[0];
    const j = (await waitDone(id)) ?? jobs(id)[id];
    expect(j.Exit_status, j.comment).to.equal(0);
    expect(['ge1', 'ge2']).to.include(hostOf(j));
    const seq = id.split('.')[0];
    expect(inside(`cat /root/w/remote.o${seq} /root/w/made.txt`).stdout).to.equal('out-from-the-clone\nmade-on-a-node\n');
  });

  it('a 4-task array spreads over the 2 nodes, each fetching its snapshot once', async function () {
    const before = nodes.map((n) => fetchesIn(n.log).length);
    // The tasks sleep so that those on one node overlap: the cache is released with the last holder.
    const sub = inside("cd /root/w && gcqsub -N arr -J 1-4 -- sh -c 'sleep 20; echo task $PBS_ARRAY_INDEX'");
    expect(sub.status, sub.stderr).to.equal(0);
    const arr = sub.stdout.trim();
    const done = await waitDone(arr);
    const all = jobs();
    const tasks = Object.entries(all).filter(([id]) => id.startsWith(arr.split('[')[0] + '[') && id !== arr);
    expect(done.Exit_status, tasks.map(([id, t]) => `${id} ${t.Exit_status ?? '-'} ${t.comment ?? ''}`).join('; ')).to.equal(0);
    expect(tasks).to.have.length(4);
    const hosts = new Set(tasks.map(([, t]) => hostOf(t)));
    expect([...hosts].sort()).to.deep.equal(['ge1', 'ge2']);
    const seq = arr.split('[')[0];
    expect(inside(`cd /root/w && cat arr.o${seq}.1 arr.o${seq}.2 arr.o${seq}.3 arr.o${seq}.4`).stdout).to.equal('task 1\ntask 2\ntask 3\ntask 4\n');
    const ids: string[] = [];
    for (const [i, n] of nodes.entries()) {
      const fetched = fetchesIn(n.log).slice(before[i]);
      process.stderr.write(`      ${n.name} fetched: ${fetched.join('; ')}\n`);
      expect(fetched, `${n.name} fetched the array's snapshot once`).to.have.length(1);
      ids.push(fetched[0].split(' ')[0]);
    }
    expect(ids[0], 'the same snapshot on both nodes').to.equal(ids[1]);
  });
});
