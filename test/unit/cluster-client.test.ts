import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CopperClient } from '../../src/client/copper-client.js';
import { CopperError, QuotaError, UnavailableError, UsageError } from '../../src/errors.js';

/** CopperClient against a stand-in gcd on a Unix socket: what it sends, how it reads answers. */
describe('clusters: CopperClient speaks the typed /v1/clusters routes', () => {
  let dir: string;
  let server: Server;
  let socketPath: string;
  const seen: string[] = [];
  let answer: (path: string) => { status: number; body: unknown } = () => ({ status: 200, body: { clones: [] } });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'copper-client-'));
    socketPath = join(dir, 'gcd.sock');
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        seen.push(`${req.method} ${req.url} ${text}`.trimEnd());
        const a = answer(req.url ?? '');
        res.writeHead(a.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(a.body));
      });
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });

  it('sends typed requests, with the headnode on the host, and parses JSON', async () => {
    const made = [{ id: 1, name: 'hn-c1' }];
    answer = (path) => ({ status: 200, body: path.includes('kill') ? { killed: made } : { clones: made } });
    const c = new CopperClient({ socketPath }, { headnode: 'hn' });
    expect(await c.clone(2, { ttlSec: 60 })).to.deep.equal(made);
    expect(await c.clones()).to.deep.equal(made);
    expect(await c.kill({ generation: 2 })).to.deep.equal(made);
    await c.kill({ ids: [1, 3] });
    await c.kill({ all: true });
    expect(seen.splice(0)).to.deep.equal([
      'POST /v1/clusters/clone {"n":2,"ttlSec":60,"headnode":"hn"}',
      'GET /v1/clusters?headnode=hn',
      'POST /v1/clusters/kill {"generation":2,"headnode":"hn"}',
      'POST /v1/clusters/kill {"ids":[1,3],"headnode":"hn"}',
      'POST /v1/clusters/kill {"all":true,"headnode":"hn"}',
    ]);
  });

  it('a refusal is a typed error with gcd\'s one line (and a quota refusal\'s fields)', async () => {
    const fields = { limit: 'max_clones', max: 3, entity: 'user alice', amount: 4, used: 0 };
    answer = () => ({ status: 409, body: { error: 'gc clone 4: refused, none created: max_clones=3 for user alice', code: 'EQUOTA', fields } });
    const c = new CopperClient({ socketPath });
    let err: unknown;
    await c.clone(4).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(QuotaError);
    expect((err as Error).message).to.equal('gc clone 4: refused, none created: max_clones=3 for user alice');
    expect((err as QuotaError).fields).to.deep.equal(fields);
    answer = () => ({ status: 500, body: { error: 'gc kill: no clone 9', code: 'EDRIVER' } });
    await c.kill({ ids: [9] }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(CopperError);
    answer = () => ({ status: 400, body: { error: 'request body is not valid JSON', code: 'EUSAGE' } });
    await c.whoami().catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UsageError);
  });

  it('no gcd: UnavailableError', async () => {
    let err: unknown;
    await new CopperClient({ socketPath: join(dir, 'nobody.sock') }).clones().catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.match(/cannot reach gcd: ENOENT/);
  });
});
