import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CopperClient } from '../../src/client/copper-client.js';
import { CopperError, QuotaError, UnavailableError, UsageError } from '../../src/errors.js';

/** CopperClient against a stand-in gcd on a Unix socket: what it sends, how it reads answers. */
describe('clusters: CopperClient speaks /v1/cli', () => {
  let dir: string;
  let server: Server;
  let socketPath: string;
  const seen: Array<{ tool: string; argv: string[] }> = [];
  let answer: (argv: string[]) => { status: number; body: unknown } = () => ({ status: 200, body: { stdout: '[]', stderr: '', exitCode: 0 } });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'copper-client-'));
    socketPath = join(dir, 'gcd.sock');
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { tool: string; argv: string[] };
        seen.push({ tool: body.tool, argv: body.argv });
        const a = answer(body.argv);
        const text = JSON.stringify(a.body);
        res.writeHead(a.status, { 'content-type': 'application/json' });
        res.end(text);
      });
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });

  it('sends the same argv the gc tool takes, with --headnode on the host, and parses JSON', async () => {
    const made = [{ id: 1, name: 'hn-c1' }];
    answer = () => ({ status: 200, body: { stdout: JSON.stringify(made) + '\n', stderr: '', exitCode: 0 } });
    const c = new CopperClient({ socketPath }, { headnode: 'hn' });
    expect(await c.clone(2, { ttlSec: 60 })).to.deep.equal(made);
    await c.clones();
    await c.kill({ generation: 2 });
    await c.kill({ ids: [1, 3] });
    await c.kill({ all: true });
    expect(seen.splice(0).map((s) => [s.tool, ...s.argv].join(' '))).to.deep.equal([
      'gc clone 2 --json --ttl 60 --headnode hn',
      'gc clones --json --headnode hn',
      'gc kill --json --generation 2 --headnode hn',
      'gc kill --json 1 3 --headnode hn',
      'gc kill --json --all --headnode hn',
    ]);
  });

  it('a refusal is a typed error with the tool\'s one line', async () => {
    answer = () => ({ status: 200, body: { stdout: '', stderr: 'gc: gc clone 4: refused, none created: max_clones=3 for user alice\n', exitCode: 38 } });
    const c = new CopperClient({ socketPath });
    let err: unknown;
    await c.clone(4).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(QuotaError);
    expect((err as Error).message).to.equal('gc clone 4: refused, none created: max_clones=3 for user alice');
    answer = () => ({ status: 200, body: { stdout: '', stderr: 'gc: gc kill: no clone 9\n', exitCode: 1 } });
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
