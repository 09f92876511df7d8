import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReadAhead } from '../../src/drivers/qemu/read-ahead.js';
import { AgentClient } from '../../src/vm/agent.js';
import { scriptedAgent, type AgentRequest } from '../helpers/fake-agent.js';

/**
 * The clone's archive read ahead of the headnode (scripted guest agent on a real Unix socket):
 * the bytes in order, exactly `size` of them, no more than `ahead` waiting, a short file an error.
 */
describe('stage-out read-ahead from a clone agent', function () {
  this.timeout(20_000);
  let dir: string;
  const closers: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    await rm(dir, { recursive: true, force: true });
  });

  /** An agent whose file holds `fileBytes` bytes (byte i is i % 251), or never ends. */
  async function agentWith(fileBytes: number | 'endless'): Promise<{ agent: AgentClient; asked: () => number }> {
    dir = await mkdtemp(join(tmpdir(), 'so-ra-'));
    let pos = 0;
    let asked = 0;
    const fa = await scriptedAgent(join(dir, 'a.sock'), (req: AgentRequest, reply) => {
      if (req.execute !== 'guest-file-read') return reply({ error: { class: 'CommandNotFound', desc: req.execute } });
      const count = Number(req.arguments?.count ?? 0);
      const n = fileBytes === 'endless' ? count : Math.max(0, Math.min(count, fileBytes - pos));
      const buf = Buffer.alloc(n);
      for (let i = 0; i < n; i++) buf[i] = (pos + i) % 251;
      pos += n;
      asked += count;
      reply({ return: { count: n, 'buf-b64': buf.toString('base64'), eof: fileBytes !== 'endless' && pos >= fileBytes } });
    });
    const agent = await AgentClient.connect(join(dir, 'a.sock'), { deadline: Date.now() + 2000 });
    await agent.waitReady(Date.now() + 3000);
    closers.push(
      () => fa.close(),
      () => agent.destroy(),
    );
    return { agent, asked: () => asked };
  }

  it('gives exactly size bytes in order from a file that goes on, and reads no further', async () => {
    const { agent, asked } = await agentWith('endless');
    const r = new ReadAhead(agent, 1, 100_000, 16_384, 1 << 20);
    const parts: Buffer[] = [];
    for (let p = await r.next(); p; p = await r.next()) parts.push(p);
    const all = Buffer.concat(parts);
    expect(all.length).to.equal(100_000);
    expect(all.every((b, i) => b === i % 251)).to.equal(true);
    await r.finished;
    expect(asked()).to.equal(100_000);
  });

  it('stops reading ahead at its bound while nobody consumes', async () => {
    const { agent, asked } = await agentWith('endless');
    const r = new ReadAhead(agent, 1, 10_000_000, 65_536, 200_000);
    await new Promise((res) => setTimeout(res, 300));
    expect(asked()).to.be.at.most(200_000 + 65_536);
    r.stop();
    await r.finished;
  });

  it('a file shorter than announced is an error for the consumer', async () => {
    const { agent } = await agentWith(5_000);
    const r = new ReadAhead(agent, 1, 8_000, 4_096, 1 << 20);
    let err: unknown;
    try {
      for (let p = await r.next(); p; p = await r.next());
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/ended after 5000 of 8000/);
  });
});
