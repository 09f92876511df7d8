import { expect } from 'chai';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient, AgentError } from '../../src/vm/agent.js';
import { DriverError } from '../../src/errors.js';

interface FakeOpts {
  /** Garbage a restored guest leaves in the channel, sent on connect. */
  junkOnConnect?: Buffer;
  /** Ignore the first N sync requests (a guest whose agent is not up yet). */
  ignoreSyncs?: number;
}

/**
 * A fake guest agent speaking qga's framing: a 0xFF byte resets its parser; guest-sync-delimited
 * answers 0xFF + JSON; no request ids. Handles the stream as bytes.
 */
function fakeAgent(path: string, opts: FakeOpts = {}): Promise<{ srv: Server; files: Map<string, Buffer>; log: string[] }> {
  const files = new Map<string, Buffer>();
  const log: string[] = [];
  let ignore = opts.ignoreSyncs ?? 0;
  const procs = new Map<number, { out: Buffer; polls: number }>();
  const handles = new Map<number, { path: string; pos: number }>();
  let nextHandle = 1000;
  const srv = createServer((s: Socket) => {
    if (opts.junkOnConnect) s.write(opts.junkOnConnect);
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const ff = buf.indexOf(0xff);
        const nl = buf.indexOf(0x0a);
        if (ff >= 0 && (nl < 0 || ff < nl)) {
          buf = buf.subarray(ff + 1);
          continue;
        }
        if (nl < 0) break;
        const line = buf.subarray(0, nl).toString('utf8');
        buf = buf.subarray(nl + 1);
        const msg = JSON.parse(line) as { execute: string; arguments?: Record<string, unknown> };
        log.push(msg.execute);
        const a = msg.arguments ?? {};
        const send = (body: unknown, delimited = false): void => {
          const json = Buffer.from(JSON.stringify(body) + '\n');
          s.write(delimited ? Buffer.concat([Buffer.from([0xff]), json]) : json);
        };
        switch (msg.execute) {
          case 'guest-sync-delimited':
            if (ignore > 0) {
              ignore--;
              break;
            }
            send({ return: a.id }, true);
            break;
          case 'guest-exec': {
            const pid = 4000 + procs.size;
            const input = typeof a['input-data'] === 'string' ? Buffer.from(a['input-data'], 'base64') : Buffer.alloc(0);
            procs.set(pid, { out: Buffer.concat([Buffer.from(`${String(a.path)} ${(a.arg as string[]).join(' ')}|`), input]), polls: 0 });
            send({ return: { pid } });
            break;
          }
          case 'guest-exec-status': {
            const p = procs.get(a.pid as number);
            if (!p) {
              send({ error: { class: 'GenericError', desc: 'Invalid parameter pid' } });
              break;
            }
            p.polls++;
            if (p.polls < 3) send({ return: { exited: false } });
            else send({ return: { exited: true, exitcode: 0, 'out-data': p.out.toString('base64') } });
            break;
          }
          case 'guest-file-open': {
            const h = nextHandle++;
            handles.set(h, { path: a.path as string, pos: 0 });
            if (String(a.mode).startsWith('w')) files.set(a.path as string, Buffer.alloc(0));
            send({ return: h });
            break;
          }
          case 'guest-file-write': {
            const h = handles.get(a.handle as number)!;
            const data = Buffer.from(a['buf-b64'] as string, 'base64');
            files.set(h.path, Buffer.concat([files.get(h.path) ?? Buffer.alloc(0), data]));
            send({ return: { count: data.length, eof: false } });
            break;
          }
          case 'guest-file-read': {
            const h = handles.get(a.handle as number)!;
            const f = files.get(h.path) ?? Buffer.alloc(0);
            const chunk = f.subarray(h.pos, h.pos + (a.count as number));
            h.pos += chunk.length;
            send({ return: { count: chunk.length, 'buf-b64': chunk.toString('base64'), eof: h.pos >= f.length } });
            break;
          }
          case 'guest-file-close':
            handles.delete(a.handle as number);
            send({ return: {} });
            break;
          default:
            send({ error: { class: 'CommandNotFound', desc: `The command ${msg.execute} has not been found` } });
        }
      }
    });
  });
  return new Promise((resolve) => srv.listen(path, () => resolve({ srv, files, log })));
}

describe('AgentClient', () => {
  let dir: string;
  let srv: Server | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'agent-test-'));
  });
  afterEach(async () => {
    await new Promise<void>((r) => (srv ? srv.close(() => r()) : r()));
    srv = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('syncs through garbage (incl. 0xFF and invalid UTF-8) left by a restored guest', async () => {
    const path = join(dir, 'qga.sock');
    const junk = Buffer.concat([Buffer.from('{"return": 12'), Buffer.from([0xc3, 0xff, 0xfe]), Buffer.from('}\n{"return": {}}\n')]);
    const fa = await fakeAgent(path, { junkOnConnect: junk });
    srv = fa.srv;
    const ag = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    await ag.waitReady(Date.now() + 3000);
    const pid = await ag.exec('/bin/echo', ['hi'], { A: 'b' }, Buffer.from('in'), true);
    expect(pid).to.equal(4000);
    await ag.close();
  });

  it('waitReady retries until the agent answers', async () => {
    const path = join(dir, 'qga.sock');
    const fa = await fakeAgent(path, { ignoreSyncs: 2 });
    srv = fa.srv;
    const ag = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    await ag.waitReady(Date.now() + 5000);
    expect(fa.log.filter((c) => c === 'guest-sync-delimited').length).to.equal(3);
    await ag.close();
  });

  it('waitReady fails at its deadline with a DriverError', async () => {
    const path = join(dir, 'qga.sock');
    const fa = await fakeAgent(path, { ignoreSyncs: 1000 });
    srv = fa.srv;
    const ag = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    const err = await ag.waitReady(Date.now() + 300).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(DriverError);
    await ag.close();
  });

  it('runs a command to completion and returns its output', async () => {
    const path = join(dir, 'qga.sock');
    srv = (await fakeAgent(path)).srv;
    const ag = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    const st = await ag.run('/bin/cat', ['-'], { input: Buffer.from('data') });
    expect(st.exited).to.equal(true);
    expect(st.exitCode).to.equal(0);
    expect(st.out?.toString()).to.equal('/bin/cat -|data');
    await ag.close();
  });

  it('moves binary files in and out in chunks', async () => {
    const path = join(dir, 'qga.sock');
    const fa = await fakeAgent(path);
    srv = fa.srv;
    const ag = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    const data = Buffer.alloc(300_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const h = await ag.fileOpen('/tmp/x', 'wb');
    for (let o = 0; o < data.length; o += 65536) await ag.fileWrite(h, data.subarray(o, o + 65536));
    await ag.fileClose(h);
    expect(fa.files.get('/tmp/x')?.equals(data)).to.equal(true);
    const r = await ag.fileOpen('/tmp/x', 'rb');
    const parts: Buffer[] = [];
    for (;;) {
      const c = await ag.fileRead(r, 100_000);
      parts.push(c.data);
      if (c.eof) break;
    }
    await ag.fileClose(r);
    expect(Buffer.concat(parts).equals(data)).to.equal(true);
    await ag.close();
  });

  it('reports agent errors with class and desc, and serializes concurrent requests', async () => {
    const path = join(dir, 'qga.sock');
    srv = (await fakeAgent(path)).srv;
    const ag = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    const [a, b, c] = await Promise.allSettled([
      ag.exec('/bin/a', [], null, null, false),
      ag.execStatus(999),
      ag.exec('/bin/b', [], null, null, false),
    ]);
    expect(a.status === 'fulfilled' && a.value).to.equal(4000);
    expect(b.status).to.equal('rejected');
    const err = (b as PromiseRejectedResult).reason as AgentError;
    expect(err).to.be.instanceOf(AgentError);
    expect(err.qmpClass).to.equal('GenericError');
    expect(c.status === 'fulfilled' && c.value).to.equal(4001);
    await ag.close();
  });

  it('rejects requests when the connection closes', async () => {
    const path = join(dir, 'qga.sock');
    let conn: Socket | undefined;
    const fa = await fakeAgent(path);
    srv = fa.srv;
    srv.on('connection', (s) => (conn = s));
    const ag = await AgentClient.connect(path, { deadline: Date.now() + 2000 });
    await ag.sync();
    conn?.destroy();
    await ag.closed;
    expect(await ag.exec('/bin/x', [], null, null, false).catch((e: unknown) => e)).to.be.instanceOf(DriverError);
  });
});
