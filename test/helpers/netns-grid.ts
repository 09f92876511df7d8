import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeStateCgroups } from '../../src/vm/vm-cgroup.js';
import { GcdProcess, BIN } from './gcd-process.js';

/**
 * A grid on one machine: the server gcd in the root network namespace, listening for nodes on
 * a bridge made by the test (`<tag>b`, 10.254.<x>.1/24, nothing routed elsewhere), and each
 * compute host in its own namespace `<tag>-<n>` (tag: prefix `gn` and the pid) joined to the bridge by a veth pair, running
 * `gcd --node` with its own state and RAM folders. Test traffic stays on that bridge.
 * Needs root (ip netns). teardown() kills every process and deletes every link and namespace.
 */
export interface GridNodeOptions {
  /** GC_CAPACITY_NCPUS / GC_CAPACITY_MEM_MIB of this host. */
  ncpus: number;
  memMiB: number;
  env?: NodeJS.ProcessEnv;
}

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

function ipQuiet(...args: string[]): void {
  spawnSync('ip', args, { stdio: 'ignore' });
}

export class GridNode {
  proc: ChildProcess | undefined;
  log = '';
  readonly stateDir = mkdtempSync(join(tmpdir(), 'copper-gn-node-'));
  readonly ramDir: string;

  constructor(
    readonly name: string,
    readonly netns: string,
    readonly address: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.ramDir = join('/dev/shm', `copper-${this.stateDir.split('/').pop()}`);
  }

  /** Start `gcd --node` inside the namespace and wait until it has registered. */
  async start(): Promise<void> {
    this.log = '';
    const env = { ...this.env, GC_STATE_DIR: this.stateDir, GC_RAM_DIR: this.ramDir, GC_NODE_NAME: this.name };
    // `ip netns exec` execs the command: the child's pid is gcd's (kill -9 reaches it).
    this.proc = spawn('ip', ['netns', 'exec', this.netns, process.execPath, join(BIN, 'gc-node.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.log.includes('gcd ready')) return;
      if (this.proc.exitCode !== null) throw new Error(`gc-node ${this.name} exited: ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`gc-node ${this.name} did not become ready: ${this.log}`);
  }

  /** kill -9 of its gcd (its commands die with it: pdeathsig). */
  async kill9(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
    await gone;
    clearTimeout(t);
  }

  async cleanup(): Promise<void> {
    // A killed node leaves its clones' cgroups (outside the state folder) until it restarts.
    await removeStateCgroups(this.stateDir);
    rmSync(this.stateDir, { recursive: true, force: true });
    rmSync(this.ramDir, { recursive: true, force: true });
  }
}

export interface NetnsGridOptions {
  /** Prefix of every bridge, namespace and veth name (default `gn`); a test suite's own keeps runs of different suites apart. */
  prefix?: string;
  /** The bridge's /24 (default 10.254.<20 + pid % 200>): suites running at once need different ones. */
  subnet?: string;
}

export class NetnsGrid {
  /** A short tag so that concurrent runs (and other lanes' harness runs) do not collide. */
  readonly tag: string;
  readonly subnet: string;
  readonly bridge: string;
  readonly serverAddress: string;
  readonly redisPort = 6400 + (process.pid % 1000);
  server: GcdProcess | undefined;
  readonly nodes: GridNode[] = [];
  private readonly namespaces: string[] = [];

  constructor(o: NetnsGridOptions = {}) {
    this.tag = `${o.prefix ?? 'gn'}${process.pid % 10000}`;
    this.subnet = o.subnet ?? `10.254.${20 + (process.pid % 200)}`;
    this.bridge = `${this.tag}b`;
    this.serverAddress = `${this.subnet}.1`;
  }

  /** The bridge, with the server's address on it. */
  up(): void {
    this.down();
    ip('link', 'add', this.bridge, 'type', 'bridge');
    ip('addr', 'add', `${this.serverAddress}/24`, 'dev', this.bridge);
    ip('link', 'set', this.bridge, 'up');
  }

  /** The server gcd (root namespace), its Redis reachable for nodes on the bridge only. */
  async startServer(env: NodeJS.ProcessEnv): Promise<GcdProcess> {
    this.server = new GcdProcess({ ...env, GC_REDIS_BIND: `${this.serverAddress}:${this.redisPort}` });
    await this.server.start();
    return this.server;
  }

  /** The URL nodes reach the server's Redis at (written by the server; no password: each node signs in as its own user). */
  nodeRedisUrl(): string {
    if (!this.server) throw new Error('server not started');
    return readFileSync(join(this.server.stateDir, 'redis', 'node-url'), 'utf8').trim();
  }

  /** The same address as the server's own (default) user: every right, for the test's own looks. */
  redisUrl(): string {
    if (!this.server) throw new Error('server not started');
    const u = new URL(this.nodeRedisUrl());
    u.password = readFileSync(join(this.server.stateDir, 'redis', 'password'), 'utf8').trim();
    return u.toString();
  }

  /** `gc node token NAME` on the server: the node's token (its Redis user is made with it). */
  mintToken(name: string): string {
    if (!this.server) throw new Error('server not started');
    const t = this.server.tool('gc', ['node', 'token', name]);
    if (t.status !== 0) throw new Error(`gc node token ${name}: ${t.stderr}`);
    return t.stdout.trim();
  }

  /** A namespace with a veth to the bridge, and `gcd --node` in it. */
  async addNode(name: string, o: GridNodeOptions): Promise<GridNode> {
    const n = this.nodes.length + 1;
    const ns = `${this.tag}-${n}`;
    const hostEnd = `${this.tag}h${n}`;
    const nsEnd = `${this.tag}n${n}`;
    ip('netns', 'add', ns);
    this.namespaces.push(ns);
    ip('link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', nsEnd);
    ip('link', 'set', nsEnd, 'netns', ns);
    ip('link', 'set', hostEnd, 'master', this.bridge);
    ip('link', 'set', hostEnd, 'up');
    const address = `${this.subnet}.${10 + n}`;
    ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', nsEnd);
    ip('-n', ns, 'link', 'set', nsEnd, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    const node = new GridNode(name, ns, address, {
      ...process.env,
      GC_LOG_LEVEL: 'info',
      ...(this.server?.env ?? {}),
      GC_REDIS_BIND: '',
      GC_REDIS_URL: this.nodeRedisUrl(),
      // A node given no token gets one here (tests that pass their own minted it on the server).
      GC_NODE_TOKEN: o.env?.GC_NODE_TOKEN ?? this.mintToken(name),
      GC_CAPACITY_NCPUS: String(o.ncpus),
      GC_CAPACITY_MEM_MIB: String(o.memMiB),
      GC_SOCKET: '',
      ...o.env,
    });
    this.nodes.push(node);
    await node.start();
    return node;
  }

  /** Cut a node's link (its gcd lives on but reaches nothing), or mend it. */
  link(node: GridNode, on: boolean): void {
    const n = this.nodes.indexOf(node) + 1;
    ip('link', 'set', `${this.tag}h${n}`, on ? 'up' : 'down');
  }

  /** Every process stopped, every link and namespace deleted, every folder removed. */
  async teardown(): Promise<void> {
    for (const n of this.nodes) await n.kill9().catch(() => undefined);
    await this.server?.cleanup().catch(() => undefined);
    for (const n of this.nodes) await n.cleanup();
    this.down();
  }

  private down(): void {
    for (const ns of this.namespaces.splice(0)) ipQuiet('netns', 'del', ns);
    // Host ends of the veths go with their peers' namespaces; the bridge goes last.
    ipQuiet('link', 'del', this.bridge);
  }
}

/**
 * The server of a grid test on the test-double driver: it runs no jobs itself (nodes do), with
 * heartbeats, locks and kills quick enough for a test to see a host die within seconds.
 */
export function fakeGridServerEnv(deadMs: number, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    GC_DRIVER: 'fake',
    GC_FAKE_HEADNODES: 'hn1:alice:physics',
    GC_SERVER_NAME: 'srv',
    GC_SERVER_RUNS_JOBS: '0',
    GC_NODE_HEARTBEAT_MS: '300',
    GC_NODE_DEAD_MS: String(deadMs),
    GC_LOCK_MS: '2000',
    GC_KILL_DELAY_MS: '500',
    GC_PLACEMENT_DEFER_MS: '0',
    ...extra,
  };
}
