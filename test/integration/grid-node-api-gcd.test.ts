import { expect } from 'chai';
import { readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { NodeApiClient, NodeApiError } from '../../src/grid/node-api-client.js';
import { nbdPskOf } from '../../src/grid/snapshot-export-info.js';
import { GcdProcess } from '../helpers/gcd-process.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The node API as gcd composes it (GC_NODE_API_ADDR), its tokens minted with `gc node token`. */
describe('grid relay: gcd serves the node API on GC_NODE_API_ADDR (gcd process, test-double driver)', function () {
  this.timeout(60_000);
  let g: GcdProcess;
  let url: string;

  before(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:users', GC_SERVER_NAME: 'srv', GC_NODE_API_ADDR: `127.0.0.1:${port}` });
    await g.start();
  });

  after(async () => {
    await g?.cleanup();
  });

  it('gc node token mints a token (0600) that the node API takes; a wrong or revoked one is refused', async () => {
    const t = g.tool('gc', ['node', 'token', 'n1']);
    expect(t.status, t.stderr).to.equal(0);
    const token = t.stdout.trim();
    expect(statSync(join(g.stateDir, 'grid', 'node-tokens', 'n1')).mode & 0o777).to.equal(0o600);
    const code = async (c: NodeApiClient): Promise<string | undefined> => {
      const e = await c.releaseSnapshot('fake-none', '1.srv').then(
        () => undefined,
        (x: unknown) => x,
      );
      return e instanceof NodeApiError ? `${e.status} ${e.message}` : String(e);
    };
    // The right token gets past authentication, to the job check (no such job ran on n1).
    expect(await code(new NodeApiClient({ serverUrl: url, node: 'n1', token }))).to.match(/^403 .*not that of a job that ended on this node/);
    expect(await code(new NodeApiClient({ serverUrl: url, node: 'n1', token: 'C'.repeat(43) }))).to.match(/^403 .*wrong token/);
    const bad = g.tool('gc', ['node', 'token', '../etc']);
    expect(bad.status).to.not.equal(0);
    expect(g.tool('gc', ['node', 'token', '--revoke', 'n1']).status).to.equal(0);
    expect(await code(new NodeApiClient({ serverUrl: url, node: 'n1', token }))).to.match(/^403 .*wrong token/);
  });

  it('a node with a valid token reaches no user API and no job that is not its own', async () => {
    const token = g.tool('gc', ['node', 'token', 'n2']).stdout.trim();
    const sub = g.tool('gcqsub', ['--headnode', 'hn1', '--', 'sleep', '30']);
    const c = new NodeApiClient({ serverUrl: url, node: 'n2', token });
    const id = sub.stdout.trim() || '1.srv';
    const e = await c.deliverOutput(id, '/tmp/STDIN.o1', join(g.stateDir, 'grid', 'node-tokens', 'n2')).catch((x: unknown) => x);
    expect(e).to.be.instanceOf(NodeApiError);
    expect((e as NodeApiError).remoteCode).to.equal('EPERM');
    const res = await fetch(`${url}/v1/cli`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'x-copper-node': 'n2', 'content-type': 'application/json' },
      body: JSON.stringify({ tool: 'gcqsub', argv: ['true'] }),
    });
    expect(res.status).to.equal(404);
  });
});

/** GC_NBD_ADDR: gcd exports snapshots to the nodes that hold a token, and `gc node token` re-keys them. */
describe('grid wire: gcd with GC_NBD_ADDR lets token holders into the NBD exports (gcd process, qemu-storage-daemon)', function () {
  this.timeout(60_000);
  let g: GcdProcess;
  const keys = (): string => readFileSync(join(g.stateDir, 'run', 'nbd', 'psk', 'keys.psk'), 'utf8');

  before(async () => {
    g = new GcdProcess({
      GC_DRIVER: 'fake',
      GC_FAKE_HEADNODES: 'hn1:alice:users',
      GC_SERVER_NAME: 'srv',
      GC_NODE_API_ADDR: `127.0.0.1:${await freePort()}`,
      GC_NBD_ADDR: `127.0.0.1:${await freePort()}`,
    });
    await g.start();
  });

  after(async () => {
    await g?.cleanup();
  });

  it('a minted node gets its key, a new token replaces it, a revoked node loses it; a restart keeps token holders in', async () => {
    const first = g.tool('gc', ['node', 'token', 'n1']).stdout.trim();
    expect(keys()).to.include(`n1:${nbdPskOf(first)}`);
    const second = g.tool('gc', ['node', 'token', 'n1']).stdout.trim();
    expect(keys())
      .to.include(`n1:${nbdPskOf(second)}`)
      .and.not.include(nbdPskOf(first));
    const other = g.tool('gc', ['node', 'token', 'n2']).stdout.trim();
    expect(g.tool('gc', ['node', 'token', '--revoke', 'n1']).status).to.equal(0);
    expect(keys()).to.not.match(/^n1:/m);
    expect(keys()).to.include(`n2:${nbdPskOf(other)}`);
    expect(await g.stop()).to.equal(0);
    await g.start();
    expect(keys())
      .to.include(`n2:${nbdPskOf(other)}`)
      .and.not.match(/^n1:/m);
  });
});
