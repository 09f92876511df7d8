import { expect } from 'chai';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverError } from '../../src/errors.js';
import { AgentClient, AgentProtocolError } from '../../src/vm/agent.js';
import { copyFromGuest, copyToGuest, GuestFileTooLargeError, GuestNoProgressError, readGuestFile, writeGuestFile } from '../../src/vm/guest-files.js';
import { DEFAULT_MAX_LINE_BYTES, JsonLineReader, ProtocolError } from '../../src/vm/json-lines.js';
import { flood, scriptedAgent, type AgentScript } from '../helpers/fake-agent.js';

/**
 * Issue 13 items 2 and 3: the guest agent's stream and the files read through it are the
 * guest's, and the guest is hostile. A fake agent on a real Unix socket floods, lies and
 * stalls; the client must stay bounded, end what it was doing with a reason, and never
 * throw out of an event handler (which would kill gcd).
 */
describe('hostile guest agent (fake agent on a real Unix socket)', function () {
  this.timeout(120_000);
  let dir: string;
  let closeAgent: (() => Promise<void>) | undefined;
  let ag: AgentClient | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hostile-agent-'));
  });
  afterEach(async () => {
    ag?.destroy();
    ag = undefined;
    await closeAgent?.();
    closeAgent = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function agentWith(script: AgentScript, opts: { requestTimeoutMs?: number } = {}): Promise<{ requests: { execute: string }[] }> {
    const path = join(dir, 'qga.sock');
    const fa = await scriptedAgent(path, script);
    closeAgent = () => fa.close();
    ag = await AgentClient.connect(path, { deadline: Date.now() + 2000, ...opts });
    await ag.waitReady(Date.now() + 3000);
    return fa;
  }

  describe('the agent stream (json-lines)', () => {
    it('a 1 GiB line without a newline: the channel is closed at the cap, memory stays bounded', async () => {
      let flooding: Promise<number> | undefined;
      await agentWith((_req, _reply, sock) => {
        flooding = flood(sock, 1024 * 1024 * 1024);
      });
      const rss0 = process.memoryUsage().rss;
      const err = await ag!.request('guest-info').then(
        () => undefined,
        (e: unknown) => e,
      );
      const sent = await flooding!;
      expect(err).to.be.instanceOf(AgentProtocolError);
      expect((err as Error).message).to.match(/broke the protocol: a line of over \d+ bytes/);
      expect(sent, 'the flood was cut short').to.be.below(1024 * 1024 * 1024);
      // The cap (48 MiB) is buffered at most once: no quadratic copies, no 1 GiB string.
      expect(process.memoryUsage().rss - rss0).to.be.below(DEFAULT_MAX_LINE_BYTES * 4);
      // Broken for good: every later request fails the same way, at once.
      const again = await ag!.request('guest-ping').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(again).to.equal(err);
      expect(ag!.protocolError).to.equal(err);
    });

    it('garbage and invalid JSON in a flood: broken after the stray-line budget, not read for ever', async () => {
      await agentWith((_req, _reply, sock) => {
        const junk = Buffer.from('not json at all\n{"return": 12\n\u00ff\u00fe}{\n');
        for (let i = 0; i < 2000; i++) sock.write(junk);
      });
      const err = await ag!.request('guest-info').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(AgentProtocolError);
      expect((err as Error).message).to.match(/more than 256 lines that are not JSON or answer nothing asked/);
    });

    it('answers to requests never asked, sent while nothing is asked: broken', async () => {
      let sock: import('node:net').Socket | undefined;
      await agentWith((req, reply, s) => {
        sock = s;
        reply({ return: { version: '9' } });
      });
      await ag!.request('guest-info'); // a fair answer first
      for (let i = 0; i < 300; i++) sock!.write(JSON.stringify({ return: i, id: i }) + '\n');
      await new Promise((r) => setTimeout(r, 300));
      expect(ag!.protocolError).to.be.instanceOf(AgentProtocolError);
      const e = await ag!.request('guest-info').then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).to.be.instanceOf(AgentProtocolError);
    });

    it("a few stray lines (a restored clone's junk, a late answer) are tolerated", async () => {
      await agentWith((req, reply, sock) => {
        reply({ return: { ok: req.execute } });
        sock.write('garbage\n{"return": "late"}\n'); // arrives while nothing is asked
      });
      for (let i = 0; i < 50; i++) expect(await ag!.request('guest-info')).to.deep.equal({ ok: 'guest-info' });
      expect(ag!.protocolError).to.equal(undefined);
    });

    it('JsonLineReader joins a line sent in small chunks once (linear time) and refuses one over its cap', () => {
      const r = new JsonLineReader({ maxLineBytes: 64 * 1024 * 1024 });
      const payload = 'x'.repeat(40 * 1024 * 1024);
      const line = Buffer.from(JSON.stringify({ return: payload }) + '\n');
      const t0 = Date.now();
      const out: unknown[] = [];
      for (let i = 0; i < line.length; i += 16 * 1024) out.push(...r.push(line.subarray(i, i + 16 * 1024)));
      // Quadratic concatenation of 2,560 chunks of 40 MiB would copy ~50 GiB: minutes, not this.
      expect(Date.now() - t0).to.be.below(5000);
      expect(out).to.have.length(1);
      expect((out[0] as { return: string }).return.length).to.equal(payload.length);
      const small = new JsonLineReader({ maxLineBytes: 1000 });
      expect(() => small.push(Buffer.alloc(600, 0x61))).not.to.throw();
      expect(() => small.push(Buffer.alloc(600, 0x61))).to.throw(ProtocolError);
      expect(small.pendingBytes).to.equal(0);
      // 0xFF bytes inside a line are dropped; the next line parses.
      expect(small.push(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"a":1}\n{"b":2}\n')]))).to.deep.equal([{ a: 1 }, { b: 2 }]);
    });
  });

  describe('file I/O through a lying agent (guest-files)', () => {
    /** An agent whose files answer with `read` and whose writes take `wrote` bytes. */
    const fileAgent =
      (read: (count: number) => { data: Buffer; eof: boolean }, wrote: (n: number) => number = (n) => n): AgentScript =>
      (req, reply) => {
        const a = req.arguments ?? {};
        switch (req.execute) {
          case 'guest-file-open':
            return reply({ return: 7 });
          case 'guest-file-read': {
            const r = read(a.count as number);
            return reply({ return: { count: r.data.length, 'buf-b64': r.data.toString('base64'), eof: r.eof } });
          }
          case 'guest-file-write':
            return reply({ return: { count: wrote(Buffer.from(a['buf-b64'] as string, 'base64').length), eof: false } });
          case 'guest-file-close':
            return reply({ return: {} });
          default:
            return reply({ error: { class: 'CommandNotFound', desc: req.execute } });
        }
      };

    it('count 0 with eof false for ever: the read stops after 3 idle answers, not in a loop', async () => {
      const fa = await agentWith(fileAgent(() => ({ data: Buffer.alloc(0), eof: false })));
      const host = join(dir, 'out');
      const r = await copyFromGuest(ag!, '/run/copper/x.stdout', host);
      expect(r.bytes).to.equal(0);
      expect(r.cut).to.match(/moved no bytes in 3 answers in a row/);
      expect(fa.requests.filter((q) => q.execute === 'guest-file-read')).to.have.length(3);
      const e = await readGuestFile(ag!, '/run/copper/x.pgid').then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).to.be.instanceOf(GuestNoProgressError);
    });

    it('/dev/zero-like endless file: the copy stops at its cap and says so; a small read throws at 64 KiB', async () => {
      const fa = await agentWith(fileAgent((count) => ({ data: Buffer.alloc(count), eof: false })));
      const host = join(dir, 'out');
      const r = await copyFromGuest(ag!, '/run/copper/x.stdout', host, { maxBytes: 3 * 1024 * 1024 + 5, chunk: 1024 * 1024 });
      expect(r.bytes).to.equal(3 * 1024 * 1024 + 5);
      expect(r.cut).to.match(/is over 3145733 bytes; the first 3145733 were kept/);
      expect((await readFile(host)).length).to.equal(3 * 1024 * 1024 + 5);
      expect(fa.requests.filter((q) => q.execute === 'guest-file-read').length).to.be.at.most(5);
      const e = await readGuestFile(ag!, '/run/copper/x.pgid', { maxBytes: 64 }).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).to.be.instanceOf(GuestFileTooLargeError);
      expect((e as Error).message).to.equal('guest file /run/copper/x.pgid is over 64 bytes');
    });

    it('a trickle of one byte per answer: the copy ends at its deadline', async () => {
      await agentWith(fileAgent(() => ({ data: Buffer.from('z'), eof: false })));
      const r = await copyFromGuest(ag!, '/f', join(dir, 'out'), { deadline: Date.now() + 500 });
      expect(r.cut).to.match(/not done by its deadline/);
      expect(r.bytes).to.be.above(0);
    });

    it('an answer with more bytes than asked, or a bad shape, is refused', async () => {
      await agentWith((req, reply) => {
        if (req.execute === 'guest-file-open') return reply({ return: 1 });
        if (req.execute === 'guest-file-read') return reply({ return: { count: 10, 'buf-b64': Buffer.alloc(100).toString('base64'), eof: true } });
        if (req.execute === 'guest-file-write') return reply({ return: { count: 'lots' } });
        return reply({ return: {} });
      });
      const e = await readGuestFile(ag!, '/f', { maxBytes: 10 }).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).to.be.instanceOf(DriverError);
      expect((e as Error).message).to.match(/100 bytes when \d+ were asked/);
      const w = await writeGuestFile(ag!, '/f', Buffer.from('hello')).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect((w as Error).message).to.match(/bad count "lots"/);
    });

    it('writes answered with count 0: the copy into the guest fails instead of looping', async () => {
      await agentWith(
        fileAgent(
          () => ({ data: Buffer.alloc(0), eof: true }),
          () => 0,
        ),
      );
      const src = join(dir, 'src');
      await writeFile(src, 'payload');
      const e = await copyToGuest(ag!, src, '/root/out').then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).to.be.instanceOf(GuestNoProgressError);
      const w = await writeGuestFile(ag!, '/f', Buffer.from('x')).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(w).to.be.instanceOf(GuestNoProgressError);
    });
  });
});
