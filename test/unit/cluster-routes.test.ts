import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChannelServer } from '../../src/api/channels.js';
import { ApiServer } from '../../src/api/server.js';
import { ClusterCalls, type ClusterOps } from '../../src/clusters/calls.js';
import type { ClusterCaller } from '../../src/clusters/service.js';
import type { CloneInfo, KillSelector } from '../../src/clusters/types.js';
import { CopperClient } from '../../src/client/copper-client.js';
import { QuotaError, UsageError } from '../../src/errors.js';
import type { Scheduler } from '../../src/scheduler/scheduler.js';

/** A clone record as the service would give it. */
function info(headnode: string, id: number): CloneInfo {
  return {
    id, name: `${headnode}-c${id}`, headnode, generation: 1, parent: headnode, state: 'running',
    address: `10.100.0.${id + 1}`, mac: '52:54:00:00:00:01', createdAt: 0, uptimeSec: 1,
  };
}

/**
 * The typed cluster routes on gcd's real API server, over real Unix sockets: the admin socket
 * and per-VM channels. The cluster service is a recording stand-in (the real one needs QEMU:
 * test/vm/cluster.test.ts); what is asserted is who the routes say is speaking.
 */
describe('api: typed /v1/clusters routes and their identity rules', () => {
  let dir: string;
  let api: ApiServer;
  let channels: ChannelServer;
  let adminSocket: string;
  let hnA: string;
  let cloneA: string;
  const calls: string[] = [];
  let refuse: Error | undefined;

  const ops: ClusterOps = {
    async clone(c: ClusterCaller, req: { n: number; ttlSec?: number }) {
      calls.push(`clone ${JSON.stringify(c)} n=${req.n} ttl=${req.ttlSec ?? '-'}`);
      if (refuse) throw refuse;
      return Array.from({ length: req.n }, (_, i) => info(c.headnode, i + 1));
    },
    async list(headnode: string, o: { admin?: boolean } = {}) {
      calls.push(`list ${headnode} admin=${o.admin === true}`);
      return [info(headnode, 1)];
    },
    async listAll() {
      calls.push('listAll');
      return [info('hn-a', 1), info('hn-b', 1)];
    },
    usage(user?: string) {
      calls.push(`usage ${user ?? '*'}`);
      return [{ user: user ?? 'alice', group: 'g', clones: 1, limit: 8 }];
    },
    async kill(c: ClusterCaller, sel: KillSelector) {
      calls.push(`kill ${JSON.stringify(c)} ${JSON.stringify(sel)}`);
      return { killed: [info(c.headnode, 1)] };
    },
    whoami(c: ClusterCaller) {
      calls.push(`whoami ${JSON.stringify(c)}`);
      return { kind: c.kind, headnode: c.headnode, id: 0, generation: 0, name: c.vmId };
    },
  };

  /** One request on a socket; the answer's status and JSON body. */
  function http(socketPath: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
    const text = body === undefined ? '' : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request({ socketPath, method, path, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> }));
      });
      req.on('error', reject);
      req.end(text);
    });
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'copper-routes-'));
    const scheduler = {} as Pick<Scheduler, 'list' | 'get' | 'delete'>;
    api = new ApiServer({ scheduler, cli: () => Promise.reject(new Error('not used')), clusters: new ClusterCalls(ops) });
    channels = new ChannelServer(dir, (req, res, actor) => api.handle(req, res, actor));
    adminSocket = join(dir, 'gcd.sock');
    await api.listenAdmin(adminSocket);
    hnA = await channels.open({ vmId: 'hn-a', kind: 'headnode', headnode: 'hn-a', owner: 'alice', group: 'g' });
    cloneA = await channels.open({ vmId: 'hn-a-c2', kind: 'clone', headnode: 'hn-a', owner: 'alice', group: 'g' });
  });
  after(async () => {
    await channels.closeAll();
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    calls.length = 0;
    refuse = undefined;
  });

  it('a headnode\'s channel clones, lists, kills and asks whoami as itself', async () => {
    const made = await http(hnA, 'POST', '/v1/clusters/clone', { n: 2, ttlSec: 60 });
    expect(made.status).to.equal(200);
    expect((made.body.clones as CloneInfo[]).map((c) => c.name)).to.deep.equal(['hn-a-c1', 'hn-a-c2']);
    expect((await http(hnA, 'GET', '/v1/clusters')).body.clones).to.have.length(1);
    expect((await http(hnA, 'POST', '/v1/clusters/kill', { ids: [1] })).body.killed).to.have.length(1);
    expect((await http(hnA, 'GET', '/v1/clusters/whoami')).body).to.include({ kind: 'headnode', headnode: 'hn-a' });
    const me = JSON.stringify({ kind: 'headnode', vmId: 'hn-a', headnode: 'hn-a' });
    expect(calls).to.deep.equal([`clone ${me} n=2 ttl=60`, 'list hn-a admin=false', `kill ${me} {"ids":[1]}`, `whoami ${me}`]);
  });

  it('a clone\'s channel acts as that clone, in its headnode\'s cluster', async () => {
    await http(cloneA, 'POST', '/v1/clusters/clone', { n: 1 });
    await http(cloneA, 'GET', '/v1/clusters');
    const me = JSON.stringify({ kind: 'clone', vmId: 'hn-a-c2', headnode: 'hn-a' });
    expect(calls).to.deep.equal([`clone ${me} n=1 ttl=-`, 'list hn-a admin=false']);
  });

  it('a VM channel cannot act for another headnode: naming one is refused and nothing is called', async () => {
    for (const [method, path, body] of [
      ['POST', '/v1/clusters/clone', { n: 1, headnode: 'hn-b' }],
      ['POST', '/v1/clusters/kill', { all: true, headnode: 'hn-b' }],
      ['GET', '/v1/clusters?headnode=hn-b', undefined],
      ['GET', '/v1/clusters/whoami?headnode=hn-b', undefined],
      ['GET', '/v1/clusters?all=1', undefined],
    ] as const) {
      const r = await http(hnA, method, path, body);
      expect(r.status, `${method} ${path}`).to.equal(400);
      expect(r.body.code).to.equal('EUSAGE');
      expect(r.body.error).to.match(/administrator on the host/);
    }
    expect(calls).to.deep.equal([]);
  });

  it('a guest sees its owner\'s usage row; the administrator everybody\'s', async () => {
    await http(hnA, 'GET', '/v1/clusters/usage');
    const all = await new CopperClient({ socketPath: adminSocket }).usage();
    expect(all).to.have.length(1);
    expect(calls).to.deep.equal(['usage alice', 'usage *']);
  });

  it('the administrator names the headnode (CopperClient), or lists every cluster', async () => {
    const c = new CopperClient({ socketPath: adminSocket }, { headnode: 'hn-b' });
    expect((await c.clone(1, { ttlSec: 5 })).map((x) => x.headnode)).to.deep.equal(['hn-b']);
    expect(await c.kill({ generation: 1 })).to.have.length(1);
    expect((await c.whoami()).headnode).to.equal('hn-b');
    expect((await http(adminSocket, 'GET', '/v1/clusters?all=1')).body.clones).to.have.length(2);
    const admin = JSON.stringify({ kind: 'headnode', vmId: 'hn-b', headnode: 'hn-b', admin: true });
    expect(calls).to.deep.equal([`clone ${admin} n=1 ttl=5`, `kill ${admin} {"generation":1}`, `whoami ${admin}`, 'listAll']);
    let err: unknown;
    await new CopperClient({ socketPath: adminSocket }).clones().catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.equal('gc clones: on the host, name the headnode: gc clones --headnode NAME ...');
  });

  it('a quota refusal is HTTP 409 with the limit\'s fields, and a QuotaError again in CopperClient', async () => {
    const fields = { limit: 'max_clones', max: 3, entity: 'user alice', amount: 4, used: 0, source: 'gcd setting GC_MAX_CLONES' };
    refuse = new QuotaError('gc clone 4: refused, none created: max_clones=3 for user alice (gcd setting GC_MAX_CLONES) (0 live clones, 4 more asked)', fields);
    const r = await http(hnA, 'POST', '/v1/clusters/clone', { n: 4 });
    expect(r.status).to.equal(409);
    expect(r.body).to.deep.equal({ error: refuse.message, code: 'EQUOTA', fields });
    let err: unknown;
    await new CopperClient({ socketPath: adminSocket }, { headnode: 'hn-a' }).clone(4).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(QuotaError);
    expect((err as QuotaError).fields).to.deep.equal(fields);
  });

  it('malformed requests get 400 with one line and reach nothing', async () => {
    for (const [path, body] of [
      ['/v1/clusters/clone', {}],
      ['/v1/clusters/clone', { n: '2' }],
      ['/v1/clusters/clone', { n: 1, ttlSec: -5 }],
      ['/v1/clusters/kill', {}],
      ['/v1/clusters/kill', { ids: [1], all: true }],
      ['/v1/clusters/kill', { ids: ['x'] }],
    ] as const) {
      const r = await http(hnA, 'POST', path, body);
      expect(r.status, `${path} ${JSON.stringify(body)}`).to.equal(400);
      expect(r.body.error).to.be.a('string').and.not.include('\n');
    }
    expect((await http(hnA, 'GET', '/v1/clusters/nope')).status).to.equal(404);
    expect(calls).to.deep.equal([]);
  });
});
