import { expect } from 'chai';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packToHostFile } from '../../src/drivers/qemu/stage-out-clone.js';
import { placeHostArchive } from '../../src/drivers/qemu/stage-out-headnode.js';
import { AgentClient } from '../../src/vm/agent.js';
import { scriptedAgent, type AgentRequest } from '../helpers/fake-agent.js';

/**
 * The two halves of a stage-out apart (a compute node packs, the server places): the archive a
 * hostile clone sends is bounded on the node, and one over the bound never reaches a headnode.
 * Scripted guest agents on real Unix sockets stand in for the guests.
 */
describe('stage-out halves: pack to a host file, place a host file (scripted agents)', function () {
  this.timeout(60_000);
  let dir: string;
  const closers: Array<() => Promise<void> | void> = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gr-halves-'));
  });
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    await rm(dir, { recursive: true, force: true });
  });

  /** A clone whose pack.sh reports one entry and whose archive is `archiveBytes` long (or endless). */
  async function clone(archiveBytes: number | 'endless'): Promise<{ agent: AgentClient; reads: () => number }> {
    let sent = 0;
    let reads = 0;
    const path = join(dir, `clone-${Math.random()}.sock`);
    const fa = await scriptedAgent(path, (req: AgentRequest, reply) => {
      if (req.execute === 'guest-exec') return reply({ return: { pid: 7 } });
      if (req.execute === 'guest-exec-status')
        return reply({ return: { exited: true, exitcode: 0, 'out-data': Buffer.from('1 100 0 0\n').toString('base64') } });
      if (req.execute === 'guest-file-open') return reply({ return: 1 });
      if (req.execute === 'guest-file-close') return reply({ return: {} });
      if (req.execute === 'guest-file-read') {
        reads++;
        const count = Number(req.arguments?.count ?? 0);
        const left = archiveBytes === 'endless' ? count : Math.max(0, Math.min(count, archiveBytes - sent));
        sent += left;
        return reply({
          return: { count: left, 'buf-b64': Buffer.alloc(left, 0x61).toString('base64'), eof: archiveBytes !== 'endless' && sent >= archiveBytes },
        });
      }
      reply({ error: { class: 'CommandNotFound', desc: req.execute } });
    });
    const agent = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    await agent.waitReady(Date.now() + 3000);
    closers.push(
      () => fa.close(),
      () => agent.destroy(),
    );
    return { agent, reads: () => reads };
  }

  const req = (capBytes: number) => ({
    jobId: '5.srv',
    headnode: 'hn1',
    paths: ['/root/work'],
    account: 'root',
    capBytes,
    keepDir: join(dir, 'keep'),
    keepMaxBytes: 1024,
  });

  it('packs the archive into a host file of its exact size', async () => {
    const c = await clone(300_000);
    const out = join(dir, 'a.tar');
    const r = await packToHostFile({ clone: c.agent, cloneStartMs: Date.now(), chunk: 65536 }, req(1024 * 1024), out);
    expect(r.archiveBytes).to.equal(300_000);
    expect(statSync(out).size).to.equal(300_000);
  });

  it('an endless archive from a hostile clone stops at the bound and leaves no host file', async () => {
    const c = await clone('endless');
    const out = join(dir, 'b.tar');
    const err = await packToHostFile({ clone: c.agent, cloneStartMs: Date.now(), chunk: 1024 * 1024 }, req(1024), out).catch((e: unknown) => e);
    expect((err as Error).message).to.match(/larger than \d+ bytes/);
    expect(existsSync(out)).to.equal(false);
    // The bound is the cap plus 64 MiB of tar overhead: about 65 reads of 1 MiB, not endless.
    expect(c.reads()).to.be.below(70);
  });

  it('an archive file over the bound is refused before anything is written into the headnode', async () => {
    const big = join(dir, 'big.tar');
    await writeFile(big, Buffer.alloc(65 * 1024 * 1024 + 10));
    const touched: string[] = [];
    const path = join(dir, 'hn.sock');
    const fa = await scriptedAgent(path, (r: AgentRequest, reply) => {
      touched.push(r.execute);
      reply({ return: {} });
    });
    const hn = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    await hn.waitReady(Date.now() + 3000);
    closers.push(
      () => fa.close(),
      () => hn.destroy(),
    );
    const before = touched.length;
    const err = await placeHostArchive({ headnode: hn, snapshotAtMs: Date.now(), frozenAtGuestMs: Date.now() }, big, { ...req(1024) }).catch((e: unknown) => e);
    expect((err as Error).message).to.match(/archive is larger than/);
    expect(touched.slice(before)).to.deep.equal([]);
  });
});
