import { expect } from 'chai';
import { access, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { QemuDriver } from '../../src/drivers/qemu/qemu-driver.js';
import { NotFoundError } from '../../src/errors.js';
import { fetchExport, NbdClientKey, NbdFetchError } from '../../src/grid/nbd-fetch.js';
import type { SnapshotCache } from '../../src/grid/snapshot-cache.js';
import type { SnapshotExporter } from '../../src/grid/snapshot-export.js';
import { nbdPskOf, snapExportKey } from '../../src/grid/snapshot-export-info.js';
import { defaultImageSource } from '../../src/image/default-image.js';
import { QemuHeadnodeManager } from '../../src/headnodes/manager.js';
import type { GuestChannels, GuestIdentity } from '../../src/headnodes/types.js';
import { Clones } from '../../src/vm/clones/clones.js';
import { Layout } from '../../src/vm/layout.js';
import { SnapshotStore } from '../../src/vm/snapshots/store.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { openNodeCache, startLoopbackExporter } from '../helpers/grid-transfer.js';

/**
 * Snapshot transfer to a compute host under TCG: a real headnode snapshotted on the "server",
 * exported by a real qemu-storage-daemon on 127.0.0.1 with TLS-PSK, fetched by a SnapshotCache
 * into a second state folder and RAM folder (the "node"), and a clone started from the copy.
 */

class FakeChannels implements GuestChannels {
  constructor(private readonly dir: string) {}
  async open(identity: GuestIdentity): Promise<string> {
    return join(this.dir, `${identity.vmId}.sock`);
  }
  async close(): Promise<void> {}
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

const MiB = 1024 * 1024;

describe('grid snapshot transfer over NBD @vm', function () {
  this.timeout(300_000);
  const imageStateDir = process.env.GC_STATE_DIR ?? '/var/tmp/copper-test';
  const hn = 'gs';
  const nodeName = 'gs-node1';
  const nodeToken = 'token-of-gs-node1-for-tests';
  let root: string;
  let server: { stateDir: string; ramDir: string };
  let node: { stateDir: string; ramDir: string };
  let mgr: QemuHeadnodeManager;
  let drv: QemuDriver;
  let redis: TestRedis;
  let sub: Redis;
  let exporter: SnapshotExporter;
  let cache: SnapshotCache;
  let nodeLayout: Layout;
  let clones: Clones;
  let snapId: string;
  let port: number;
  const streams = new Map<string, Promise<void>>();

  before(async function () {
    this.timeout(900_000);
    root = await mkdtemp(join(tmpdir(), 'gs-'));
    server = { stateDir: join(root, 'server'), ramDir: `/dev/shm/gs-test-server-${process.pid}` };
    node = { stateDir: join(root, 'node'), ramDir: `/dev/shm/gs-test-node-${process.pid}` };
    const channels = new FakeChannels(join(server.stateDir, 'run', 'channels'));
    mgr = new QemuHeadnodeManager({
      settings: server,
      channels,
      images: defaultImageSource({ stateDir: imageStateDir, log: (l) => process.stderr.write(`      image: ${l}\n`) }),
    });
    drv = new QemuDriver({ settings: server, channels, headnodes: mgr, streams });
    await mgr.create({ name: hn, owner: 'alice', group: 'alice', memMiB: 512, vcpus: 1, diskGiB: 4 });
    await mgr.start(hn);
    await mgr.withRunning(hn, async (h) => {
      const st = await h.agent.run('/bin/sh', ['-c', 'echo written-before-the-snapshot > /root/mark.txt; sync'], { timeoutMs: 60_000 });
      if (st.exitCode !== 0) throw new Error('headnode: could not write the mark');
    });
    snapId = (await drv.snapshot(hn)).id;

    redis = await startTestRedis();
    ({ exporter, sub, port } = await startLoopbackExporter({ layout: new Layout(server), stateDir: server.stateDir, redis: redis.client, keyPrefix: 'gs' }));
    await exporter.allowNode(nodeName, nbdPskOf(nodeToken));

    nodeLayout = new Layout(node);
    cache = await openNodeCache({ layout: nodeLayout, stateDir: node.stateDir, redis: redis.client, keyPrefix: 'gs', nodeName, nodeToken });
    await cache.sweep();
    clones = new Clones({ layout: nodeLayout, store: new SnapshotStore(nodeLayout), channels: new FakeChannels(join(node.stateDir, 'run', 'channels')) });
  });

  after(async function () {
    this.timeout(120_000);
    await clones?.close();
    await exporter?.close();
    sub?.disconnect();
    await redis?.stop();
    await drv?.close();
    for (const id of (await drv?.listSnapshots().catch(() => [])) ?? []) await drv.releaseSnapshot(id);
    await mgr?.destroy(hn).catch(() => undefined);
    await mgr?.close();
    for (const d of [server?.ramDir, node?.ramDir]) if (d) await rm(d, { recursive: true, force: true });
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('fetches a snapshot once into the node, and a clone of the copy runs', async () => {
    const served0 = await exporter.bytesServed();
    // Two jobs of one snapshot arrive together: one fetch.
    const [dirA, dirB] = await Promise.all([cache.acquire(snapId, 'job-a'), cache.acquire(snapId, 'job-b')]);
    expect(dirA).to.equal(join(node.stateDir, 'snapshots', snapId));
    expect(dirB).to.equal(dirA);
    expect(cache.cached()).to.deep.equal([snapId]);
    expect(cache.holders(snapId)).to.deep.equal(['job-a', 'job-b']);
    const { fetches } = cache.stats();
    expect(fetches).to.have.length(1);
    const f = fetches[0];
    const served = (await exporter.bytesServed()) - served0;
    process.stderr.write(
      `      fetched in ${f.ms} ms: ${(f.bytes / MiB).toFixed(1)} MiB on the node (RAM ${(f.ramBytes / MiB).toFixed(1)} of 512 MiB), ${(served / MiB).toFixed(1)} MiB served\n`,
    );
    // Sparse: the guest's touched pages only, not its 512 MiB.
    expect(f.ramBytes)
      .to.be.greaterThan(4 * MiB)
      .and.lessThan(512 * MiB);
    expect(served).to.be.at.least(f.ramBytes);
    expect(await exists(nodeLayout.snapshot(snapId).ramFile)).to.equal(true);

    await clones.start({ cloneId: 'gsc1', snapshotId: snapId, hostname: 'gsc1', init: 'clone-init' });
    const out = await clones.withClone('gsc1', async (c) => {
      const st = await c.agent.run('/bin/sh', ['-c', 'cat /root/mark.txt; hostname'], { timeoutMs: 60_000 });
      return st.out?.toString() ?? '';
    });
    expect(out).to.equal('written-before-the-snapshot\ngsc1\n');
    await clones.destroy('gsc1');

    // A later job of the same snapshot: nothing moves.
    const before = await exporter.bytesServed();
    await cache.acquire(snapId, 'job-c');
    expect(cache.stats().fetches).to.have.length(1);
    expect(await exporter.bytesServed()).to.equal(before);
  });

  it('removes the copy with the last holder, and only then', async () => {
    await cache.release(snapId, 'job-a');
    await cache.release(snapId, 'job-b');
    expect(cache.cached()).to.deep.equal([snapId]);
    expect(await exists(nodeLayout.snapshot(snapId).meta)).to.equal(true);
    await cache.release(snapId, 'job-c');
    expect(cache.cached()).to.deep.equal([]);
    expect(await exists(nodeLayout.snapshot(snapId).dir)).to.equal(false);
    expect(await exists(nodeLayout.snapshot(snapId).ramFile)).to.equal(false);
    expect(await readdir(join(node.stateDir, 'grid-cache', 'blobs'))).to.deep.equal([]);
  });

  it('refuses a node whose key is wrong, and one it does not know', async () => {
    const info = await exporter.ensure(snapId);
    const src = { host: '127.0.0.1', port, exportName: info.state.export, bytes: info.state.bytes };
    const wrong = await NbdClientKey.write(join(root, 'wrong-key'), nodeName, nbdPskOf('some-other-token-entirely'));
    const err1 = await fetchExport(src, wrong, join(root, 'stolen-1')).catch((e: unknown) => e);
    expect(err1).to.be.instanceOf(NbdFetchError);
    expect((err1 as Error).message).to.match(/TLS|handshake/i);
    const stranger = await NbdClientKey.write(join(root, 'stranger-key'), 'gs-stranger', nbdPskOf(nodeToken));
    const err2 = await fetchExport(src, stranger, join(root, 'stolen-2')).catch((e: unknown) => e);
    expect(err2).to.be.instanceOf(NbdFetchError);
    expect(await exists(join(root, 'stolen-1'))).to.equal(false);
  });

  it('a fresh node sweeps what a killed one left; a released export is gone', async () => {
    await cache.acquire(snapId, 'job-d');
    // The node process dies holding it: a new cache on the same folders sweeps at start.
    const again = await openNodeCache({ layout: nodeLayout, stateDir: node.stateDir, redis: redis.client, keyPrefix: 'gs', nodeName, nodeToken });
    await again.sweep();
    expect(await exists(nodeLayout.snapshot(snapId).dir)).to.equal(false);
    expect(await exists(nodeLayout.snapshot(snapId).ramFile)).to.equal(false);
    expect(await exists(join(node.stateDir, 'grid-cache'))).to.equal(false);

    await exporter.release(snapId);
    expect(exporter.list()).to.deep.equal([]);
    expect(await redis.client.exists(snapExportKey('gs', snapId))).to.equal(0);
    const short = await openNodeCache({ layout: nodeLayout, stateDir: node.stateDir, redis: redis.client, keyPrefix: 'gs', nodeName, nodeToken, waitMs: 300 });
    // Asked for again once the server no longer has the snapshot: a clear not-found, nothing left.
    await drv.releaseSnapshot(snapId);
    const err = await short.acquire(snapId, 'job-e').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(NotFoundError);
    expect(await exists(nodeLayout.snapshot(snapId).dir)).to.equal(false);
  });
});
