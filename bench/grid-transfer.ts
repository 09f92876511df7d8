/**
 * Snapshot transfer to a new compute host over loopback TCP: a real headnode on the "server",
 * its snapshots exported by qemu-storage-daemon (TLS-PSK) on 127.0.0.1, fetched by a
 * SnapshotCache into a second state and RAM folder (the "node"), as gcd --node does. Prints
 * progress lines; the last line is one JSON object:
 *   ramMiB        the headnode's RAM size
 *   cold          first snapshot on a new host: every file (base layer, kernel, initrd,
 *                 snapshot layer, device state, RAM): ms, movedMiB (allocated in the copies),
 *                 ramMovedMiB, servedMiB (read by the NBD server), MiBps
 *   warm          a later snapshot of the same headnode on that host: the base layer, kernel
 *                 and initrd are already there (reusedFiles), only its own files move
 *   filled        the same after the headnode filled BENCH_FILL_MIB of its RAM (tmpfs): the
 *                 RAM moved grows with the RAM the guest touched, not with its RAM size
 *   localCopyMs   cp --sparse of the cold set on this host (the floor without NBD/TLS)
 *   cloneDiskReadMiB  disk bytes one clone of the cached copy read to start and run a small
 *                 job (python imports, ls -R /usr/lib): what each clone would pull over the
 *                 network if the disk layers were qcow2 backing over NBD instead of copies
 * Run: node dist/bench/grid-transfer.js   (BENCH_MEM_MIB default 512, BENCH_FILL_MIB default 128)
 * The image is cached in $GC_STATE_DIR (default /var/tmp/copper-test).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { QemuDriver } from '../src/drivers/qemu/qemu-driver.js';
import type { FetchStats } from '../src/grid/snapshot-cache.js';
import type { SnapshotExporter } from '../src/grid/snapshot-export.js';
import { nbdPskOf } from '../src/grid/snapshot-export-info.js';
import { QemuHeadnodeManager } from '../src/headnodes/manager.js';
import type { GuestChannels, GuestIdentity } from '../src/headnodes/types.js';
import { defaultImageSource } from '../src/image/default-image.js';
import { Clones } from '../src/vm/clones/clones.js';
import { Layout } from '../src/vm/layout.js';
import { backingChain } from '../src/vm/qemu-img.js';
import { SnapshotStore } from '../src/vm/snapshots/store.js';
import type { Redis } from 'ioredis';
import { openNodeCache, startLoopbackExporter } from '../test/helpers/grid-transfer.js';
import { startBenchRedis } from './bench-redis.js';

const execFileP = promisify(execFile);
const MEM_MIB = Number(process.env.BENCH_MEM_MIB ?? 512);
const FILL_MIB = Number(process.env.BENCH_FILL_MIB ?? 128);
const HN = 'bgt';
const NODE = 'bgt-node';
const TOKEN = 'bench-grid-transfer-node-token';
const MiB = 1024 * 1024;
const r1 = (x: number): number => Math.round(x * 10) / 10;

const channelsDir = { path: '' };
const channels: GuestChannels = {
  async open(id: GuestIdentity): Promise<string> {
    return join(channelsDir.path, `${id.vmId}.sock`);
  },
  async close(): Promise<void> {},
};

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'gcb-gt-'));
  const server = { stateDir: join(root, 'server'), ramDir: `/dev/shm/gcb-gt-server-${process.pid}` };
  const node = { stateDir: join(root, 'node'), ramDir: `/dev/shm/gcb-gt-node-${process.pid}` };
  channelsDir.path = join(server.stateDir, 'run', 'channels');
  const images = defaultImageSource({ stateDir: process.env.GC_STATE_DIR ?? '/var/tmp/copper-test', log: (l) => console.log(`image: ${l}`) });
  const mgr = new QemuHeadnodeManager({ settings: server, channels, images });
  const drv = new QemuDriver({ settings: server, channels, headnodes: mgr });
  const redis = await startBenchRedis(join(root, 'redis'));
  let sub: Redis | undefined;
  let exporter: SnapshotExporter | undefined;
  const result: Record<string, unknown> = { ramMiB: MEM_MIB };
  try {
    await mgr.create({ name: HN, owner: 'bench', group: 'bench', memMiB: MEM_MIB, vcpus: 1, diskGiB: 4 });
    await mgr.start(HN);
    console.log(`headnode ${HN} up (${MEM_MIB} MiB)`);
    const serverLayout = new Layout(server);
    ({ exporter, sub } = await startLoopbackExporter({ layout: serverLayout, stateDir: server.stateDir, redis: redis.redis, keyPrefix: 'bgt' }));
    await exporter.allowNode(NODE, nbdPskOf(TOKEN));
    const nodeLayout = new Layout(node);
    const cache = await openNodeCache({ layout: nodeLayout, stateDir: node.stateDir, redis: redis.redis, keyPrefix: 'bgt', nodeName: NODE, nodeToken: TOKEN });
    await cache.sweep();
    const ex = exporter;

    const transfer = async (what: string): Promise<Record<string, number>> => {
      const id = (await drv.snapshot(HN)).id;
      await ex.ensure(id); // export time is the server's, not the transfer's
      const served0 = await ex.bytesServed();
      const t0 = performance.now();
      await cache.acquire(id, what);
      const ms = performance.now() - t0;
      const served = (await ex.bytesServed()) - served0;
      const f: FetchStats = cache.stats().fetches.at(-1)!;
      const out = {
        ms: Math.round(ms),
        movedMiB: r1(f.bytes / MiB),
        ramMovedMiB: r1(f.ramBytes / MiB),
        servedMiB: r1(served / MiB),
        MiBps: r1(f.bytes / MiB / (ms / 1000)),
        reusedFiles: f.reusedFiles,
      };
      console.log(`${what}: ${JSON.stringify(out)}`);
      return out;
    };

    const cold = await transfer('cold');
    // The floor: the same files copied sparsely on this host, no NBD, no TLS.
    const first = cache.cached()[0];
    const sp = serverLayout.snapshot(first);
    const files = [sp.ramFile, sp.state, ...(await backingChain(sp.disk)).map((l) => l.filename)];
    const floorDir = join(root, 'floor');
    await execFileP('mkdir', ['-p', floorDir]);
    const tc = performance.now();
    for (const [i, f] of files.entries()) await execFileP('cp', ['--sparse=always', '--', f, join(floorDir, String(i))]);
    result.localCopyMs = Math.round(performance.now() - tc);
    await rm(floorDir, { recursive: true, force: true });
    // What the copied disk layers save: the disk reads of one clone starting and running a
    // small job, which disk layers used as NBD backing would fetch per clone over the network.
    const clones = new Clones({ layout: nodeLayout, store: new SnapshotStore(nodeLayout), channels });
    try {
      const tClone = performance.now();
      await clones.start({ cloneId: 'bgt-c1', snapshotId: first, hostname: 'bgt-c1', init: 'clone-init' });
      const read = await clones.withClone('bgt-c1', async (c) => {
        const st = await c.agent.run('/bin/sh', ['-c', 'python3 -c "import json, sqlite3, email"; ls -R /usr/lib >/dev/null'], { timeoutMs: 300_000 });
        if (st.exitCode !== 0) throw new Error(`job in the clone: ${st.err?.toString() ?? ''}`);
        const stats = await c.vm.qmp.execute<Array<{ stats: { rd_bytes: number } }>>('query-blockstats');
        return stats.reduce((n, b) => n + b.stats.rd_bytes, 0);
      });
      result.cloneFromCacheMs = Math.round(performance.now() - tClone);
      result.cloneDiskReadMiB = r1(read / MiB);
      console.log(`a clone of the cached copy read ${r1(read / MiB)} MiB of its disk (${String(result.cloneFromCacheMs)} ms with its job)`);
    } finally {
      await clones.close();
    }
    const warm = await transfer('warm');
    await mgr.withRunning(HN, async (h) => {
      const st = await h.agent.run('/bin/sh', ['-c', `head -c ${FILL_MIB}M /dev/urandom > /dev/shm/fill; sync`], { timeoutMs: 600_000 });
      if (st.exitCode !== 0) throw new Error(`filling the headnode's RAM: ${st.err?.toString() ?? ''}`);
    });
    const filled = await transfer('filled');
    Object.assign(result, { cold, warm, filled, fillMiB: FILL_MIB });
  } finally {
    await exporter?.close();
    sub?.disconnect();
    await drv.close();
    for (const id of await drv.listSnapshots().catch(() => [])) await drv.releaseSnapshot(id);
    await mgr.destroy(HN).catch(() => undefined);
    await mgr.close();
    await redis.stop();
    for (const d of [server.ramDir, node.ramDir]) await rm(d, { recursive: true, force: true });
    await rm(root, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
