/**
 * Memory hot-plug benchmark under the accelerator this host offers (TCG here): what `-l mem`
 * above the headnode's RAM costs a job's start. One 512 MiB headnode, one snapshot; clones of it
 * started one at a time, alternating without `-l mem` and with `-l mem` = 4x the headnode's RAM
 * (1.5 GiB hot-plugged as DIMMs and onlined by the guest before the command runs).
 *
 * Measured per clone: start-to-command, from the driver's clone() call until a command in the
 * clone (`grep MemTotal /proc/meminfo`, which runs clone-init first as every job's does) has
 * ended and its output is on the host. The last line is one JSON object:
 *   plainMs / memMs    each run and p50, without and with -l mem; cloneReadyRuns: the part
 *                      until clone() returned (restore, hot-plug, guest has taken the DIMMs)
 *   ratio              p50 with / p50 without (aim: at most 1.2)
 *   memTotalMiB        MemTotal each variant's guest reported (proof the memory was there)
 * Run: node dist/bench/memhotplug.js   (BENCH_ROUNDS pairs, default 7; BENCH_VERBOSE=1 prints each clone's timings)
 * The image is cached in $GC_STATE_DIR (default /var/tmp/copper-test).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { QemuDriver } from '../src/drivers/qemu/qemu-driver.js';
import { defaultImageSource } from '../src/image/default-image.js';
import { QemuHeadnodeManager } from '../src/headnodes/manager.js';
import type { GuestChannels, GuestIdentity } from '../src/headnodes/types.js';

const channelsDir = { path: '' };
const channels: GuestChannels = {
  async open(id: GuestIdentity): Promise<string> {
    return join(channelsDir.path, `${id.vmId}.sock`);
  },
  async close(): Promise<void> {},
};

const p50 = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
};

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'gcb-mem-'));
  const settings = { stateDir: join(root, 'st'), ramDir: `/dev/shm/gcb-mem-${process.pid}` };
  channelsDir.path = join(settings.stateDir, 'run', 'channels');
  const images = defaultImageSource({ stateDir: process.env.GC_STATE_DIR ?? '/var/tmp/copper-test', log: (l) => console.log(`image: ${l}`) });
  const headMiB = 512;
  const askMiB = 4 * headMiB;
  const mgr = new QemuHeadnodeManager({ settings, channels, images, capacityMemMiB: 4 * askMiB });
  const drv = new QemuDriver({ settings, channels, headnodes: mgr });
  const rounds = Number(process.env.BENCH_ROUNDS ?? 7);
  const plainMs: number[] = [];
  const memMs: number[] = [];
  /** The part of each until clone() returned (restore, hot-plug, the guest taking it). */
  const plainCloneMs: number[] = [];
  const memCloneMs: number[] = [];
  const memTotalMiB: { plain: number[]; mem: number[] } = { plain: [], mem: [] };
  let accel = '';
  try {
    await mgr.create({ name: 'bmem', owner: 'bench', group: 'bench', memMiB: headMiB, vcpus: 1, diskGiB: 4 });
    accel = (await mgr.start('bmem')).accel;
    const snap = await drv.snapshot('bmem');
    console.log(`headnode ${headMiB} MiB (${accel}), clones may grow to ${snap.maxMemMiB} MiB`);

    const once = async (id: string, memMiB: number | undefined): Promise<{ ms: number; cloneMs: number; memTotal: number }> => {
      const out = join(root, `${id}.out`);
      const t0 = performance.now();
      const c = await drv.clone({ cloneId: id, snapshotId: snap.id, hostname: id, ...(memMiB !== undefined ? { memMiB } : {}) });
      const cloneMs = Math.round(performance.now() - t0);
      if (process.env.BENCH_VERBOSE) console.log(`  ${id} timings ${JSON.stringify(drv.cloneTimings(id))}`);
      try {
        const cmd = await drv.exec(c, { argv: ['grep', 'MemTotal', '/proc/meminfo'], cwd: '/', env: {}, user: 'root', stdoutFile: out, stderrFile: out });
        const r = await cmd.done;
        const ms = Math.round(performance.now() - t0);
        const text = await readFile(out, 'utf8');
        if (r.exitCode !== 0) throw new Error(`${id}: exit ${r.exitCode}: ${text}`);
        const kib = Number(/MemTotal:\s+(\d+)/.exec(text)?.[1]);
        return { ms, cloneMs, memTotal: Math.round(kib / 1024) };
      } finally {
        await drv.destroy(id);
      }
    };

    // A first clone warms the host's page cache and QEMU's binary; not counted.
    await once('warm', undefined);
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first, so that a drift in the host's load hits both alike.
      const order: Array<[string, number | undefined]> = i % 2 === 0 ? [['p', undefined], ['m', askMiB]] : [['m', askMiB], ['p', undefined]];
      for (const [kind, mem] of order) {
        const r = await once(`${kind}${i}`, mem);
        (kind === 'p' ? plainMs : memMs).push(r.ms);
        (kind === 'p' ? plainCloneMs : memCloneMs).push(r.cloneMs);
        memTotalMiB[kind === 'p' ? 'plain' : 'mem'].push(r.memTotal);
        console.log(`${kind === 'p' ? 'without -l mem' : `-l mem=${askMiB}mb`}: ${r.ms} ms (clone ready at ${r.cloneMs} ms), MemTotal ${r.memTotal} MiB`);
      }
    }
    await drv.releaseSnapshot(snap.id);
  } finally {
    await drv.close();
    for (const h of await mgr.list()) await mgr.destroy(h.name);
    await mgr.close();
    await rm(settings.ramDir, { recursive: true, force: true });
    await rm(root, { recursive: true, force: true });
  }
  const result = {
    bench: 'memhotplug', accel, headnodeMiB: headMiB, askedMiB: askMiB,
    plainMs: { runs: plainMs, p50: p50(plainMs), cloneReadyRuns: plainCloneMs },
    memMs: { runs: memMs, p50: p50(memMs), cloneReadyRuns: memCloneMs },
    ratio: Math.round((p50(memMs) / p50(plainMs)) * 100) / 100,
    memTotalMiB,
  };
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
