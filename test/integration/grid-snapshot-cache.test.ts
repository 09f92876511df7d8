import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DriverError } from '../../src/errors.js';
import { parseExportInfo } from '../../src/grid/export-directory.js';
import type { SnapshotCache } from '../../src/grid/snapshot-cache.js';
import type { SnapshotExporter } from '../../src/grid/snapshot-export.js';
import { openSnapshotCache, startSnapshotExports } from '../../src/grid/snapshot-transfer.js';
import { nbdPskOf, parseNbdAddr } from '../../src/grid/snapshot-export-info.js';
import { Layout } from '../../src/vm/layout.js';
import { backingChain } from '../../src/vm/qemu-img.js';
import type { SnapshotMeta } from '../../src/vm/snapshots/types.js';
import { SnapshotStore } from '../../src/vm/snapshots/store.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { exists, freePort, writeSnapshotFolder } from '../helpers/grid-transfer.js';

/**
 * The transfer machinery without VMs: snapshot folders made with qemu-img (a shared base
 * layer, one overlay each, odd-sized state and kernel files, a sparse RAM file), exported by a
 * real qemu-storage-daemon on 127.0.0.1 and fetched by a SnapshotCache into another folder.
 */
const execFileP = promisify(execFile);
const MiB = 1024 * 1024;

describe('grid snapshot export and node cache (qemu-storage-daemon, no VM)', function () {
  this.timeout(60_000);
  let root: string;
  let redis: TestRedis;
  let exporter: SnapshotExporter;
  let serverLayout: Layout;
  let nodeLayout: Layout;
  let cache: SnapshotCache;
  const ramDirs: string[] = [];

  /** A snapshot folder as vm/snapshots leaves it, its overlay written with `pattern`. */
  const makeSnapshot = (id: string, pattern: number): Promise<void> =>
    writeSnapshotFolder(serverLayout, id, {
      base: join(root, 'base.qcow2'),
      diskPattern: pattern,
      stateBytes: 1001,
      stateByte: pattern,
      ramMiB: 64,
      ramByte: pattern,
      ramDataAtMiB: 8,
      meta: {
        headnode: 'hn',
        owner: 'alice',
        group: 'alice',
        vm: { accel: 'tcg', memMiB: 64, vcpus: 1, kernel: join(root, 'vmlinuz'), initrd: join(root, 'initrd.img') },
      },
    });

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'gs-int-'));
    const server = { stateDir: join(root, 'server'), ramDir: `/dev/shm/gs-int-server-${process.pid}` };
    const node = { stateDir: join(root, 'node'), ramDir: `/dev/shm/gs-int-node-${process.pid}` };
    ramDirs.push(server.ramDir, node.ramDir);
    serverLayout = new Layout(server);
    nodeLayout = new Layout(node);
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', join(root, 'base.qcow2'), '16M']);
    await execFileP('qemu-io', ['-c', 'write -P 0xab 0 2M', join(root, 'base.qcow2')]);
    await writeFile(join(root, 'vmlinuz'), Buffer.alloc(3333, 7));
    await writeFile(join(root, 'initrd.img'), Buffer.alloc(777, 9));
    await makeSnapshot('hn.s1', 0x11);
    await makeSnapshot('hn.s2', 0x22);
    redis = await startTestRedis();
    // As gcd composes them: the server's exporter on GC_NBD_ADDR, a node's cache.
    const exp = await startSnapshotExports({
      settings: { ...server, keyPrefix: 'gsi', nbdAddr: `127.0.0.1:${await freePort()}` },
      store: new SnapshotStore(serverLayout),
      redis: redis.client,
    });
    if (!exp) throw new Error('no exporter although GC_NBD_ADDR is set');
    exporter = exp;
    await exporter.allowNode('n1', nbdPskOf('token-of-node-n1-long-enough'));
    cache = await openSnapshotCache({
      settings: { ...node, keyPrefix: 'gsi', nbdAddr: undefined },
      redis: redis.client,
      nodeName: 'n1',
      nodeToken: 'token-of-node-n1-long-enough',
    });
    expect(
      await startSnapshotExports({ settings: { ...server, keyPrefix: 'gsi', nbdAddr: 'off' }, store: new SnapshotStore(serverLayout), redis: redis.client }),
    ).to.equal(undefined);
  });

  after(async () => {
    await exporter?.close();
    await redis?.stop();
    for (const d of ramDirs) await rm(d, { recursive: true, force: true });
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('rebuilds each snapshot with the same disk, state, RAM and kernel, sharing the base layer', async () => {
    const d1 = await cache.acquire('hn.s1', 'a');
    const d2 = await cache.acquire('hn.s2', 'b');
    for (const id of ['hn.s1', 'hn.s2']) {
      const here = nodeLayout.snapshot(id);
      const there = serverLayout.snapshot(id);
      // Guest-visible disk content, through the whole local chain.
      await execFileP('qemu-img', ['compare', '-q', there.disk, here.disk]);
      const chain = await backingChain(here.disk);
      expect(chain).to.have.length(2);
      expect(chain[1].filename.startsWith(join(nodeLayout.runDir, '..', 'grid-cache', 'blobs'))).to.equal(true);
      expect(await readFile(here.state)).to.deep.equal(await readFile(there.state));
      expect(await readFile(here.ramFile)).to.deep.equal(await readFile(there.ramFile));
      // Sparse: 1 MiB of the 64 MiB RAM file holds data.
      expect((await stat(here.ramFile)).blocks * 512).to.be.lessThan(2 * MiB);
      const meta = JSON.parse(await readFile(here.meta, 'utf8')) as SnapshotMeta;
      expect(meta.vm.kernel).to.not.equal(join(root, 'vmlinuz'));
      expect(await readFile(meta.vm.kernel!)).to.deep.equal(await readFile(join(root, 'vmlinuz')));
      expect((await readFile(meta.vm.initrd!)).length).to.equal(777);
    }
    expect(d1).to.equal(nodeLayout.snapshot('hn.s1').dir);
    expect(d2).to.equal(nodeLayout.snapshot('hn.s2').dir);
    const [f1, f2] = cache.stats().fetches;
    expect(f1.reusedFiles).to.equal(0);
    // The base layer, kernel and initrd came with the first snapshot.
    expect(f2.reusedFiles).to.equal(3);
    expect(f2.bytes).to.be.lessThan(f1.bytes);
    expect(exporter.list()).to.deep.equal(['hn.s1', 'hn.s2']);
  });

  it('keeps a shared layer until the last snapshot using it goes', async () => {
    const blobs = join(nodeLayout.runDir, '..', 'grid-cache', 'blobs');
    expect(await readdir(blobs)).to.have.length(5); // base, kernel, initrd, two overlays
    await cache.release('hn.s1', 'a');
    expect(await readdir(blobs)).to.have.length(4);
    expect(await exists(nodeLayout.snapshot('hn.s1').dir)).to.equal(false);
    await execFileP('qemu-img', ['compare', '-q', serverLayout.snapshot('hn.s2').disk, nodeLayout.snapshot('hn.s2').disk]);
    await cache.release('hn.s2', 'b');
    expect(await readdir(blobs)).to.deep.equal([]);
    expect(await readdir(nodeLayout.ramSnapshotsDir)).to.deep.equal([]);
  });

  it('fetches a shared layer once when two snapshots using it are acquired at once', async () => {
    const n0 = cache.stats().fetches.length;
    await Promise.all([cache.acquire('hn.s1', 'x'), cache.acquire('hn.s2', 'y')]);
    const both = cache.stats().fetches.slice(n0);
    expect(both).to.have.length(2);
    // Base layer, kernel and initrd: fetched by one of them, waited for by the other.
    expect(both[0].reusedFiles + both[1].reusedFiles).to.equal(3);
    for (const id of ['hn.s1', 'hn.s2']) {
      await execFileP('qemu-img', ['compare', '-q', serverLayout.snapshot(id).disk, nodeLayout.snapshot(id).disk]);
    }
    await Promise.all([cache.release('hn.s1', 'x'), cache.release('hn.s2', 'y')]);
    expect(await readdir(join(nodeLayout.runDir, '..', 'grid-cache', 'blobs'))).to.deep.equal([]);
  });

  it('unexports a released snapshot and keeps the files other snapshots share', async () => {
    await exporter.release('hn.s1');
    expect(exporter.list()).to.deep.equal(['hn.s2']);
    await cache.acquire('hn.s2', 'c');
    await cache.release('hn.s2', 'c');
    await exporter.release('hn.s2');
    expect(exporter.list()).to.deep.equal([]);
  });

  it('rejects a malformed export record and a bad address', () => {
    expect(() => parseExportInfo('x', '{"version":1}')).to.throw(DriverError, /malformed/);
    expect(() => parseExportInfo('x', 'nope')).to.throw(DriverError, /not JSON/);
    expect(parseNbdAddr('[::1]:10809')).to.deep.equal({ host: '::1', port: 10809 });
    expect(() => parseNbdAddr('host-without-port')).to.throw(/HOST:PORT/);
  });
});
