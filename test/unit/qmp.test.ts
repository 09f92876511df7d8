import { expect } from 'chai';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, QmpError } from '../../src/vm/qmp.js';
import { DriverError } from '../../src/errors.js';

/** A fake QEMU monitor: greeting, capabilities, a few commands, events on demand. */
function fakeQmp(path: string, onConn?: (s: Socket) => void): Promise<Server> {
  const srv = createServer((s) => {
    onConn?.(s);
    s.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + '\r\n');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = JSON.parse(line) as { execute: string; id?: string; arguments?: Record<string, unknown> };
        const reply = (body: Record<string, unknown>): void => {
          s.write(JSON.stringify({ ...body, id: msg.id }) + '\r\n');
        };
        switch (msg.execute) {
          case 'qmp_capabilities':
            reply({ return: {} });
            break;
          case 'query-status':
            // An event interleaved before the reply, split across writes, must not confuse matching.
            s.write('{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n{"return": {"status": "pau');
            setTimeout(() => s.write(`sed", "running": false}, "id": ${JSON.stringify(msg.id)}}\r\n`), 10);
            break;
          case 'slow':
            setTimeout(() => reply({ return: 'late' }), 300);
            break;
          case 'echo':
            reply({ return: msg.arguments });
            break;
          case 'die':
            s.destroy();
            break;
          default:
            reply({ error: { class: 'CommandNotFound', desc: `The command ${msg.execute} has not been found` } });
        }
      }
    });
  });
  return new Promise((resolve) => srv.listen(path, () => resolve(srv)));
}

describe('QmpClient', () => {
  let dir: string;
  let srv: Server | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'qmp-test-'));
  });
  afterEach(async () => {
    await new Promise<void>((r) => (srv ? srv.close(() => r()) : r()));
    srv = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('negotiates, runs commands, matches replies around events and split chunks', async () => {
    const path = join(dir, 'qmp.sock');
    srv = await fakeQmp(path);
    const qmp = await QmpClient.connect(path, { deadline: Date.now() + 2000 });
    const events: string[] = [];
    qmp.on('*', (e) => events.push(e.event));
    const st = await qmp.execute<{ status: string; running: boolean }>('query-status');
    expect(st).to.deep.equal({ status: 'paused', running: false });
    expect(events).to.deep.equal(['STOP']);
    expect(await qmp.execute('echo', { a: 1 })).to.deep.equal({ a: 1 });
    await qmp.close();
  });

  it('connects with retry when the socket appears late', async () => {
    const path = join(dir, 'late.sock');
    setTimeout(() => {
      void fakeQmp(path).then((s) => (srv = s));
    }, 150);
    const qmp = await QmpClient.connect(path, { deadline: Date.now() + 3000 });
    expect(await qmp.execute('echo', { b: 2 })).to.deep.equal({ b: 2 });
    await qmp.close();
  });

  it('gives up at the deadline or when the process is gone', async () => {
    const path = join(dir, 'never.sock');
    const t0 = Date.now();
    await QmpClient.connect(path, { deadline: Date.now() + 200 }).then(
      () => expect.fail('connected'),
      (e: unknown) => expect(e).to.be.instanceOf(DriverError),
    );
    expect(Date.now() - t0).to.be.lessThan(1000);
    const err = await QmpClient.connect(path, { deadline: Date.now() + 5000, isAlive: () => false }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(DriverError);
    expect(String(err)).to.match(/exited/);
  });

  it('turns QMP errors into QmpError with class and desc', async () => {
    const path = join(dir, 'qmp.sock');
    srv = await fakeQmp(path);
    const qmp = await QmpClient.connect(path, { deadline: Date.now() + 2000 });
    const err = await qmp.execute('nope').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(QmpError);
    expect((err as QmpError).qmpClass).to.equal('CommandNotFound');
    expect((err as QmpError).desc).to.match(/nope/);
    await qmp.close();
  });

  it('times out a command and ignores its late reply', async () => {
    const path = join(dir, 'qmp.sock');
    srv = await fakeQmp(path);
    const qmp = await QmpClient.connect(path, { deadline: Date.now() + 2000 });
    const err = await qmp.execute('slow', undefined, 50).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(DriverError);
    expect(String(err)).to.match(/timed out/);
    expect(await qmp.execute('echo', { c: 3 })).to.deep.equal({ c: 3 });
    await qmp.close();
  });

  it('rejects pending commands when the connection drops, and waits for events', async () => {
    const path = join(dir, 'qmp.sock');
    let conn: Socket | undefined;
    srv = await fakeQmp(path, (s) => (conn = s));
    const qmp = await QmpClient.connect(path, { deadline: Date.now() + 2000 });
    const ev = qmp.waitEvent('RESUME', 1000);
    conn?.write('{"event": "RESUME", "data": {"x": 1}}\r\n');
    expect((await ev).data).to.deep.equal({ x: 1 });
    const err = await qmp.execute('die').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(DriverError);
    await qmp.closed;
    expect(qmp.isClosed).to.equal(true);
    expect(await qmp.execute('echo').catch((e: unknown) => e)).to.be.instanceOf(DriverError);
  });
});
