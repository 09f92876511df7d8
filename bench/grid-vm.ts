/**
 * Submit-to-output of a trivial job with REAL CLONES (QEMU driver, TCG here), on the local host
 * against a remote host, in one run on the netns harness (test/helpers/netns-grid.ts): the
 * server gcd (root namespace, a headnode, a compute host too) and one `gcd --node` in its own
 * network namespace, which fetches each snapshot over NBD (TLS-PSK) into its cache. The job is
 * `echo` submitted with gcqsub inside the headnode; the clock runs on this host from before
 * `gc headnode exec ... gcqsub` to the job's F in gcqstat (polled every 250 ms), which comes after
 * its output is home in the headnode. Local and remote runs alternate, so load drifts alike.
 * Prints progress lines; the last line is one JSON object:
 *   execOverheadMs   `gc headnode exec <hn> -- true` (in every sample; not subtracted)
 *   local, remote    per sample: submitMs (gcqsub returned: the snapshot is taken), startMs
 *                    (first seen R), outputHomeMs (F), runMs (R to F); and the medians
 *   ratio            median outputHomeMs remote / local
 *   runRatio         median runMs remote / local (the snapshot, taken alike for both, left out)
 *   remoteFetches    per remote sample, the node cache's fetch record (ms, MiB moved, RAM MiB)
 * Run as root: node dist/bench/grid-vm.js   (BENCH_REPEATS default 2, BENCH_MEM_MIB default 512)
 */
import { performance } from 'node:perf_hooks';
import { type GcdProcess } from '../test/helpers/gcd-process.js';
import { NetnsGrid, type GridNode } from '../test/helpers/netns-grid.js';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 2);
const MEM_MIB = Number(process.env.BENCH_MEM_MIB ?? 512);
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';
const SERVER_NODE = 'gvbsrv';
const NODE = 'gvb1';

interface Sample {
  submitMs: number;
  startMs: number | null;
  outputHomeMs: number;
  /** From first seen R to F: the clone's start (and, remote, the snapshot's fetch), the job, its output home. */
  runMs: number | null;
  host: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The middle sample, or the mean of the two middle ones. */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : Math.round((s[m - 1] + s[m]) / 2);
}

function ok(g: GcdProcess, name: string, args: string[]): string {
  const r = g.tool(name, args);
  if (r.status !== 0) throw new Error(`${name} ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout;
}

function inside(g: GcdProcess, script: string): string {
  const r = g.inHeadnode('hn', script);
  if (r.status !== 0) throw new Error(`in the headnode: ${script}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Only `host` takes jobs. */
function onlyUp(g: GcdProcess, host: string): void {
  for (const n of [SERVER_NODE, NODE]) ok(g, 'gc', ['node', n === host ? 'online' : 'offline', n]);
}

function stateOf(g: GcdProcess, id: string): { state: string; host: string; exit?: number } | undefined {
  const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
  const j = (JSON.parse(r.stdout || '{"Jobs":{}}') as { Jobs: Record<string, { job_state: string; exec_host?: string; Exit_status?: number }> }).Jobs[id];
  return j ? { state: j.job_state, host: (j.exec_host ?? '').split('/')[0], ...(j.Exit_status !== undefined ? { exit: j.Exit_status } : {}) } : undefined;
}

async function sample(g: GcdProcess, n: number): Promise<Sample> {
  const t0 = performance.now();
  const id = inside(g, `mkdir -p /root/b && cd /root/b && gcqsub -N fo${n} -- echo first-output`).trim();
  const submitMs = Math.round(performance.now() - t0);
  let startMs: number | null = null;
  for (;;) {
    const s = stateOf(g, id);
    const at = Math.round(performance.now() - t0);
    if (s?.state === 'R' && startMs === null) startMs = at;
    if (s?.state === 'F') {
      if (s.exit !== 0) throw new Error(`${id} ended with ${s.exit}`);
      const out = inside(g, `cat /root/b/fo${n}.o${id.split('.')[0]}`);
      if (out !== 'first-output\n') throw new Error(`${id}: output ${JSON.stringify(out)}`);
      return { submitMs, startMs, outputHomeMs: at, runMs: startMs === null ? null : at - startMs, host: s.host };
    }
    if (at > 600_000) throw new Error(`${id} did not finish`);
    await sleep(250);
  }
}

/** The node cache's fetch records (its log line per NBD fetch). */
function fetches(node: GridNode): Array<{ ms: number; MiB: number; ramMiB: number }> {
  return [...node.log.matchAll(/snapshot \S+ fetched from \S+ (\{.*\})/g)].map((m) => {
    const s = JSON.parse(m[1]) as { ms: number; bytes: number; ramBytes: number };
    return { ms: s.ms, MiB: Math.round(s.bytes / 104857.6) / 10, ramMiB: Math.round(s.ramBytes / 104857.6) / 10 };
  });
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/grid-vm makes network namespaces: run as root');
  const grid = new NetnsGrid({ prefix: 'gw', subnet: `10.252.${process.pid % 250}` });
  const port = (base: number): number => base + (process.pid % 1000);
  let g: GcdProcess | undefined;
  try {
    grid.up();
    g = await grid.startServer({
      GC_IMAGE_DIR: IMAGE_DIR,
      GC_SERVER_NAME: 'srv',
      GC_NODE_NAME: SERVER_NODE,
      GC_CAPACITY_NCPUS: '2',
      GC_CAPACITY_MEM_MIB: '4096',
      GC_NODE_API_ADDR: `${grid.serverAddress}:${port(7600)}`,
      GC_NBD_ADDR: `${grid.serverAddress}:${port(8600)}`,
      GC_NODE_HEARTBEAT_MS: '500',
      GC_PLACEMENT_DEFER_MS: '0',
    });
    ok(g, 'gc', ['headnode', 'create', 'hn', '--owner', 'alice', '--mem', String(MEM_MIB)]);
    ok(g, 'gc', ['headnode', 'start', 'hn']);
    const token = ok(g, 'gc', ['node', 'token', NODE]).trim();
    const node = await grid.addNode(NODE, {
      ncpus: 2,
      memMiB: 4096,
      env: {
        GC_NODE_NAME: NODE,
        GC_NODE_TOKEN: token,
        GC_SERVER_URL: `http://${grid.serverAddress}:${port(7600)}`,
        GC_NODE_CONTROL_ADDR: `${grid.subnet}.11:${port(9600)}`,
        GC_NODE_API_ADDR: '',
        GC_NBD_ADDR: '',
      },
    });
    console.log(`grid up: server ${SERVER_NODE} (headnode hn, ${MEM_MIB} MiB) and node ${NODE} (real clones)`);
    const e0 = performance.now();
    inside(g, 'true');
    const execOverheadMs = Math.round(performance.now() - e0);

    const local: Sample[] = [];
    const remote: Sample[] = [];
    const remoteFetches: Array<{ ms: number; MiB: number; ramMiB: number }> = [];
    for (let i = 0; i < REPEATS; i++) {
      onlyUp(g, SERVER_NODE);
      local.push(await sample(g, 2 * i));
      console.log(`local ${i + 1}: ${JSON.stringify(local.at(-1))}`);
      onlyUp(g, NODE);
      const before = fetches(node).length;
      remote.push(await sample(g, 2 * i + 1));
      remoteFetches.push(...fetches(node).slice(before));
      console.log(`remote ${i + 1}: ${JSON.stringify(remote.at(-1))} fetch ${JSON.stringify(remoteFetches.at(-1))}`);
    }
    for (const s of local) if (s.host !== SERVER_NODE) throw new Error(`a local sample ran on ${s.host}`);
    for (const s of remote) if (s.host !== NODE) throw new Error(`a remote sample ran on ${s.host}`);
    const lm = median(local.map((s) => s.outputHomeMs));
    const rm = median(remote.map((s) => s.outputHomeMs));
    // What the hosts run their VMs with, as they registered it.
    const accel = [...new Set((JSON.parse(ok(g, 'gc', ['nodes', '--json'])) as Array<{ accel: string }>).map((n) => n.accel))].join(',');
    console.log(
      JSON.stringify({
        driver: 'qemu',
        accel,
        headnodeMemMiB: MEM_MIB,
        execOverheadMs,
        local: { outputHomeMs: lm, runMs: median(local.map((x) => x.runMs ?? NaN)), samples: local },
        remote: { outputHomeMs: rm, runMs: median(remote.map((x) => x.runMs ?? NaN)), samples: remote },
        ratio: +(rm / lm).toFixed(2),
        // Without the snapshot (alike on both, and the noisiest part here): what running remotely adds.
        runRatio: +(median(remote.map((x) => x.runMs ?? NaN)) / median(local.map((x) => x.runMs ?? NaN))).toFixed(2),
        remoteFetches,
      }),
    );
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    await node.stop();
  } finally {
    // Every process, namespace and folder (the server's RAM folder too).
    await grid.teardown();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
