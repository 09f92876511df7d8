/**
 * The grid's queue-side figures on the netns harness (test/helpers/netns-grid.ts): a server gcd
 * in the root namespace (a compute host too) and three `gcd --node` hosts in their own network
 * namespaces, reaching the server's redis-server over TCP. TEST-DOUBLE DRIVER (GC_DRIVER=fake):
 * commands run as processes of the host's gcd, so these figures are the cost of the queue and of
 * distribution, not of clones (a TCG clone's start, seconds, would drown them; the clone side
 * is measured by bench:vm and bench:grid-transfer). Prints progress lines; the last line is one
 * JSON object:
 *   firstOutputMs     submit (gcqsub process started) to the command's first output, median of
 *                     BENCH_REPEATS jobs: { local: on the server, remote: on a node, ratio }
 *   array64           a 64-task array of `true`, submit to the array's end: { oneHostMs,
 *                     threeHostsMs, ratio } (hosts share this machine's cores: the ratio is the
 *                     cost of distribution, not a speed-up)
 *   perJob            during the 3-host array: Redis commands and Redis CPU ms per task, the
 *                     server gcd's CPU ms per task; projected: tasks/s one Redis core carries
 *   queuedBytesPerTask  Redis memory per task of a held 1000-task array (what queued jobs cost)
 *   transfer          with BENCH_TRANSFER=1, the last JSON line of bench/grid-transfer.js (real
 *                     headnode and NBD: snapshot transfer to a new host); otherwise absent
 *   array64.threeHostsPerHost  per host of the 3-host array: tasks it ran, its first start and
 *                     last end (ms after submission)
 * Run as root: npm run bench:grid   (BENCH_REPEATS default 5; BENCH_ARRAY_ONLY=1: the array only)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { ROOT, type GcdProcess } from '../test/helpers/gcd-process.js';
import { NetnsGrid } from '../test/helpers/netns-grid.js';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
/** BENCH_ARRAY_ONLY=1: only the 64-task array, 1 host then 3 (firstOutputMs and queuedBytesPerTask absent). */
const ARRAY_ONLY = process.env.BENCH_ARRAY_ONLY === '1';
const HOSTS = ['gb1', 'gb2', 'gb3'];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function tool(g: GcdProcess, name: string, args: string[]): string {
  const r = g.tool(name, args);
  if (r.status !== 0) throw new Error(`${name} ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Only these hosts take jobs: the others are set offline. */
function onlyUp(g: GcdProcess, all: string[], up: string[]): void {
  for (const n of all) tool(g, 'gc', ['node', up.includes(n) ? 'online' : 'offline', n]);
}

/** redis-cli's arguments for a redis://:PASSWORD@HOST:PORT URL (its -u wants a user name). */
function redisCliArgs(url: string): string[] {
  const u = new URL(url);
  return ['-h', u.hostname, '-p', u.port, '-a', decodeURIComponent(u.password), '--no-auth-warning'];
}

function redisInfo(url: string): { commands: number; cpuMs: number; memBytes: number } {
  const out = spawnSync('redis-cli', [...redisCliArgs(url), 'info', 'all'], { encoding: 'utf8' }).stdout;
  const num = (k: string): number => Number(new RegExp(`^${k}:([0-9.]+)`, 'm').exec(out)?.[1] ?? NaN);
  return { commands: num('total_commands_processed'), cpuMs: (num('used_cpu_sys') + num('used_cpu_user')) * 1000, memBytes: num('used_memory') };
}

function cpuMsOf(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // utime and stime are fields 14 and 15 (1-based); after "pid (comm) " they are at 11 and 12.
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
}

async function waitFinished(g: GcdProcess, id: string, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
    const j = (JSON.parse(r.stdout || '{"Jobs":{}}') as { Jobs: Record<string, { job_state: string; Exit_status?: number }> }).Jobs[id];
    if (j?.job_state === 'F') {
      if (j.Exit_status !== 0) throw new Error(`${id} ended with ${j.Exit_status}`);
      return;
    }
    await sleep(100);
  }
  throw new Error(`${id} did not finish`);
}

/** Submit-to-first-output of a trivial job, on whichever host is up. */
async function firstOutput(g: GcdProcess, marks: string, label: string): Promise<number[]> {
  const ms: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const mark = join(marks, `${label}-${i}`);
    const t0 = Date.now();
    const id = tool(g, 'gcqsub', ['--headnode', 'hn1', '--', 'sh', '-c', `date +%s%3N > ${mark}.tmp && mv ${mark}.tmp ${mark}`]).trim();
    while (!existsSync(mark)) await sleep(5);
    ms.push(Number(readFileSync(mark, 'utf8').trim()) - t0);
    await waitFinished(g, id);
  }
  return ms;
}

interface HostShare {
  tasks: number;
  /** ms after submission: the host's first task started, its last one ended. */
  firstStartMs: number;
  lastEndMs: number;
}

/** Per host: how many tasks it ran, and when (from the task records' startedAt/endedAt). */
async function shares(url: string, arrayId: string, t0: number): Promise<Record<string, HostShare>> {
  const redis = new Redis(url);
  try {
    const [seq, server] = arrayId.split('[]');
    const out: Record<string, HostShare> = {};
    for (let i = 1; i <= 64; i++) {
      const h = await redis.hgetall(`copper:job:${seq}[${i}]${server}`);
      const host = h.execHost ?? '?';
      const s = (out[host] ??= { tasks: 0, firstStartMs: Infinity, lastEndMs: 0 });
      s.tasks++;
      s.firstStartMs = Math.min(s.firstStartMs, Number(h.startedAt) - t0);
      s.lastEndMs = Math.max(s.lastEndMs, Number(h.endedAt) - t0);
    }
    return out;
  } finally {
    redis.disconnect();
  }
}

async function array64(g: GcdProcess): Promise<{ ms: number; perHost: Record<string, HostShare> }> {
  const t0 = performance.now();
  const wall0 = Date.now();
  const id = tool(g, 'gcqsub', ['--headnode', 'hn1', '-J', '1-64', '--', 'true']).trim();
  await waitFinished(g, id);
  const ms = performance.now() - t0;
  return { ms, perHost: await shares(readFileSync(join(g.stateDir, 'redis', 'node-url'), 'utf8').trim(), id, wall0) };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:grid makes network namespaces: run as root');
  const grid = new NetnsGrid();
  const marks = mkdtempSync(join(tmpdir(), 'copper-gb-marks-'));
  try {
    grid.up();
    const g = await grid.startServer({
      GC_DRIVER: 'fake',
      GC_FAKE_HEADNODES: 'hn1:alice:physics',
      GC_SERVER_NAME: 'srv',
      GC_NODE_NAME: 'gbsrv',
      GC_CAPACITY_NCPUS: '4',
      GC_CAPACITY_MEM_MIB: '8192',
      GC_NODE_HEARTBEAT_MS: '300',
      GC_PLACEMENT_DEFER_MS: '0',
    });
    for (const n of HOSTS) await grid.addNode(n, { ncpus: 4, memMiB: 8192, env: { GC_NODE_NAME: n } });
    const all = ['gbsrv', ...HOSTS];
    console.log(`grid up: server gbsrv and ${HOSTS.join(', ')} (test-double driver)`);

    let firstOutputMs: unknown;
    if (!ARRAY_ONLY) {
      onlyUp(g, all, ['gbsrv']);
      const local = await firstOutput(g, marks, 'local');
      onlyUp(g, all, ['gb1']);
      const remote = await firstOutput(g, marks, 'remote');
      firstOutputMs = { local: median(local), remote: median(remote), ratio: +(median(remote) / median(local)).toFixed(2), samples: { local, remote } };
      console.log(`submit to first output: local ${median(local)} ms, remote ${median(remote)} ms`);
    }

    onlyUp(g, all, ['gb1']);
    const one = await array64(g);
    const oneHostMs = Math.round(one.ms);
    console.log(`64-task array on 1 host: ${oneHostMs} ms ${JSON.stringify(one.perHost)}`);
    onlyUp(g, all, HOSTS);
    const url = grid.redisUrl();
    const r0 = redisInfo(url);
    const c0 = cpuMsOf(g.proc!.pid!);
    const three = await array64(g);
    const threeHostsMs = Math.round(three.ms);
    const r1 = redisInfo(url);
    const c1 = cpuMsOf(g.proc!.pid!);
    console.log(`64-task array on 3 hosts: ${threeHostsMs} ms ${JSON.stringify(three.perHost)}`);
    const array = { oneHostMs, threeHostsMs, ratio: +(threeHostsMs / oneHostMs).toFixed(2), threeHostsPerHost: three.perHost };
    // The window includes the status polls (gcqstat every 100 ms) and heartbeats: an upper bound per task.
    const redisCpuMsPerTask = +((r1.cpuMs - r0.cpuMs) / 64).toFixed(3);
    const perJob = {
      redisCommands: Math.round((r1.commands - r0.commands) / 64),
      redisCpuMs: redisCpuMsPerTask,
      serverCpuMs: +((c1 - c0) / 64).toFixed(2),
      projectedTasksPerSecPerRedisCore: redisCpuMsPerTask > 0 ? Math.round(1000 / redisCpuMsPerTask) : null,
    };
    console.log(`per task: ${perJob.redisCommands} Redis commands, ${perJob.redisCpuMs} ms Redis CPU, ${perJob.serverCpuMs} ms server CPU`);

    // What a queued job costs the server's Redis: a held 1000-task array, then deleted.
    let queuedBytesPerTask: number | undefined;
    if (!ARRAY_ONLY) {
      const m0 = redisInfo(url).memBytes;
      const held = tool(g, 'gcqsub', ['--headnode', 'hn1', '-h', '-J', '1-1000', '--', 'true']).trim();
      const m1 = redisInfo(url).memBytes;
      tool(g, 'gcqdel', [held]);
      queuedBytesPerTask = Math.round((m1 - m0) / 1000);
      console.log(`a queued (held) task: ${queuedBytesPerTask} bytes of Redis memory`);
    }

    let transfer: unknown;
    if (process.env.BENCH_TRANSFER === '1') {
      const t = spawnSync(process.execPath, [join(ROOT, 'dist', 'bench', 'grid-transfer.js')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      const last = t.stdout.trim().split('\n').pop() ?? '';
      transfer = t.status === 0 ? (JSON.parse(last) as unknown) : { error: `grid-transfer exited ${t.status}` };
    }
    console.log(
      JSON.stringify({ driver: 'fake', hosts: 1 + HOSTS.length, firstOutputMs, array64: array, perJob, queuedBytesPerTask, ...(transfer ? { transfer } : {}) }),
    );
  } finally {
    await grid.teardown();
    rmSync(marks, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
