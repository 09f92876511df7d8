import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiServer } from '../../src/api/server.js';
import type { CliCall } from '../../src/api/cli-call.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import type { JobRecord } from '../../src/queue/job.js';
import { JobStore } from '../../src/queue/job-store.js';
import { keysFor } from '../../src/queue/keys.js';
import { ADMIN, type Actor } from '../../src/scheduler/actor.js';
import { NodeApi } from '../../src/grid/node-api.js';
import { NodeApiClient, NodeApiError } from '../../src/grid/node-api-client.js';
import { NodeDriver, NoHeadnodesError, type SnapshotCacheLike } from '../../src/grid/node-driver.js';
import { nodeTokenTool } from '../../src/grid/node-token-cmd.js';
import { NodeTokens } from '../../src/grid/node-tokens.js';
import { RelayChannels } from '../../src/grid/relay-channels.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { testRecord, testSpec } from '../helpers/jobs.js';
import { unixHttp } from '../helpers/unix-http.js';

/** The snapshot cache's stand-in: records who holds what (grid-snapshots' SnapshotCache is real). */
class RecordingCache implements SnapshotCacheLike {
  readonly held = new Map<string, Set<string>>();
  async acquire(snapshotId: string, holder: string): Promise<string> {
    const s = this.held.get(snapshotId) ?? new Set<string>();
    s.add(holder);
    this.held.set(snapshotId, s);
    return `/cache/${snapshotId}`;
  }
  async release(snapshotId: string, holder: string): Promise<void> {
    this.held.get(snapshotId)?.delete(holder);
    if (this.held.get(snapshotId)?.size === 0) this.held.delete(snapshotId);
  }
}

/** A raw request to the node API, for what the client would never send. */
function raw(base: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('grid relay: node driver <-> server node API (loopback HTTP, real redis-server)', function () {
  this.timeout(60_000);
  let r: TestRedis;
  let dir: string;
  let store: JobStore;
  let serverDriver: FakeDriver;
  let nodeApi: NodeApi;
  let base: string;
  let tokens: NodeTokens;
  let token: string;
  let calls: Array<{ actor: Actor; call: CliCall }>;
  let client: NodeApiClient;
  let inner: FakeDriver;
  let cache: RecordingCache;
  let driver: NodeDriver;
  let channels: RelayChannels;
  let seq = 100;
  const reviewed: string[] = [];

  /** A job record as the dispatcher leaves it: R on `execHost`, with its clone. */
  async function runningJob(over: Partial<JobRecord> = {}): Promise<JobRecord> {
    const n = ++seq;
    const rec = testRecord(n, 'R', { id: `${n}.srv`, snapshotId: 'snap-1', cloneId: `j${n}-r1`, runCount: 1, startedAt: Date.now(), execHost: 'n1', ...over });
    await store.create([rec]);
    return rec;
  }

  before(async () => {
    r = await startTestRedis();
    dir = mkdtempSync(join(tmpdir(), 'gr-relay-'));
    store = new JobStore(r.client, keysFor('gr'), 'srv');
    serverDriver = new FakeDriver({ deliverRoot: join(dir, 'headnodes'), headnodes: new Set(['hn1']) });
    serverDriver.snapshots.add('snap-1');
    tokens = new NodeTokens(join(dir, 'server'));
    token = await tokens.mint('n1');
    await tokens.mint('n2');
    calls = [];
    const guestApi = new ApiServer({
      scheduler: { list: async () => [], get: async () => testRecord(1, 'Q'), delete: async () => undefined },
      cli: async (_tool, call) => {
        calls.push({ actor: call.actor, call });
        return { stdout: 'ok\n', stderr: '', exitCode: 0 };
      },
    });
    nodeApi = new NodeApi({
      addr: '127.0.0.1:0',
      tokens,
      store,
      driver: serverDriver,
      guestApi: () => guestApi.handle,
      incomingDir: join(dir, 'server', 'incoming'),
      undeliveredDir: join(dir, 'server', 'undelivered'),
      maxOutputBytes: 1024 * 1024,
      stageOutLimits: () => ({ capBytes: 4096, keepMaxBytes: 4096 }),
      dependents: async (job) => {
        reviewed.push(job.id);
      },
    });
    base = await nodeApi.listen();
    client = new NodeApiClient({ serverUrl: base, node: 'n1', token });
    inner = new FakeDriver({ deliverRoot: join(dir, 'node-unused'), headnodes: new Set() });
    inner.snapshots.add('snap-1');
    cache = new RecordingCache();
    driver = new NodeDriver({ node: 'n1', inner, cache, server: client, outgoingDir: join(dir, 'node', 'outgoing') });
    channels = new RelayChannels(join(dir, 'node'), client);
  });

  after(async () => {
    await channels?.closeAll();
    await driver?.close();
    await nodeApi?.close();
    await r?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('mints node tokens 0600 for the administrator only, and a guest cannot mint one', async () => {
    const st = statSync(join(tokens.dir, 'n1'));
    expect(st.mode & 0o777).to.equal(0o600);
    expect(statSync(tokens.dir).mode & 0o777).to.equal(0o700);
    const a = await nodeTokenTool({ actor: ADMIN, argv: ['node', 'token', 'n3'] }, tokens);
    expect(a.stdout.trim()).to.match(/^[A-Za-z0-9_-]{40,}$/);
    expect(await tokens.verify('n3', a.stdout.trim())).to.equal(true);
    const guest: Actor = { kind: 'guest', identity: { vmId: 'hn1', kind: 'headnode', headnode: 'hn1', owner: 'alice', group: 'users' } };
    let err: unknown;
    await nodeTokenTool({ actor: guest, argv: ['node', 'token', 'evil'] }, tokens).catch((e: unknown) => (err = e));
    expect((err as { code?: string }).code).to.equal('EPERM');
    expect(await tokens.get('evil')).to.equal(undefined);
  });

  it("relays a job's output from the node into its headnode at the job's output path", async () => {
    const job = await runningJob({ state: 'E' });
    const host = join(dir, 'stdout-1');
    writeFileSync(host, 'hello from node n1\n');
    const out = `/tmp/STDIN.o${job.seq}`;
    await driver.deliverFile('hn1', out, host, 'root', job.id);
    expect(readFileSync(join(dir, 'headnodes', 'hn1', out), 'utf8')).to.equal('hello from node n1\n');
  });

  it('clones through the snapshot cache, relays a stage-out archive into the headnode, releases the cache on destroy', async () => {
    const job = await runningJob();
    const clone = await driver.clone({ cloneId: job.cloneId!, snapshotId: 'snap-1', hostname: 'hn1-x' });
    expect(cache.held.get('snap-1')?.has(job.cloneId!)).to.equal(true);
    const res = await driver.stageOut(clone, {
      jobId: job.id,
      headnode: 'hn1',
      paths: ['/tmp'],
      account: 'root',
      capBytes: 4096,
      keepDir: join(dir, 'node', 'keep'),
      keepMaxBytes: 4096,
    });
    expect(res.placed).to.equal(1);
    const placed = readFileSync(join(dir, 'headnodes', 'hn1', '.stageout', `${job.id}.tar`), 'utf8');
    expect(placed).to.equal(`fake archive of ${job.cloneId} for ${job.id}: /tmp\n`);
    expect(res.bytes).to.equal(Buffer.byteLength(placed));
    await driver.destroy(job.cloneId!);
    expect(cache.held.has('snap-1')).to.equal(false);
    expect(inner.clones.has(job.cloneId!)).to.equal(false);
  });

  it('answers a remote clone’s guest-channel request as that clone (its job’s owner and headnode), whatever the body claims', async () => {
    const job = await runningJob({ spec: testSpec({ user: 'bob', group: 'physics', headnode: 'bob-hn' }) });
    const sock = await channels.open({ vmId: job.cloneId!, kind: 'clone', headnode: 'x', owner: 'mallory', group: 'x' });
    expect(statSync(sock).mode & 0o777).to.equal(0o600);
    const body = JSON.stringify({ tool: 'gcqstat', argv: ['-a'], user: 'alice', headnode: 'hn1', owner: 'alice' });
    const a = await unixHttp(sock, 'POST', '/v1/cli', body);
    expect(a.status, a.body).to.equal(200);
    expect(JSON.parse(a.body)).to.deep.include({ stdout: 'ok\n', exitCode: 0 });
    const last = calls.at(-1)!;
    expect(last.actor).to.deep.equal({ kind: 'guest', identity: { vmId: job.cloneId, kind: 'clone', headnode: 'bob-hn', owner: 'bob', group: 'physics' } });
    expect(last.call.argv).to.deep.equal(['-a']);
    await channels.close(job.cloneId!);
  });

  describe('refusals', () => {
    const code = (e: unknown): string | undefined => (e instanceof NodeApiError ? e.remoteCode : undefined);
    const status = (e: unknown): number | undefined => (e instanceof NodeApiError ? e.status : undefined);

    it('a wrong token, another node’s token, or none', async () => {
      const job = await runningJob({ state: 'E' });
      const host = join(dir, 'stdout-2');
      writeFileSync(host, 'x');
      for (const c of [
        new NodeApiClient({ serverUrl: base, node: 'n1', token: 'A'.repeat(43) }),
        new NodeApiClient({ serverUrl: base, node: 'n1', token: (await tokens.get('n2'))! }),
        new NodeApiClient({ serverUrl: base, node: 'nobody', token }),
      ]) {
        const e = await c.deliverOutput(job.id, `/tmp/STDIN.o${job.seq}`, host).catch((x: unknown) => x);
        expect(status(e), String(e)).to.equal(403);
      }
      const none = await raw(base, 'PUT', `/node/v1/jobs/${job.id}/output?path=/tmp/STDIN.o${job.seq}`, {}, 'x');
      expect(none.status).to.equal(403);
      expect(() => statSync(join(dir, 'headnodes', 'hn1', `/tmp/STDIN.o${job.seq}`))).to.throw();
    });

    it('a job that runs on another node, a finished job, an unknown job', async () => {
      const host = join(dir, 'stdout-3');
      writeFileSync(host, 'x');
      const elsewhere = await runningJob({ execHost: 'n2' });
      const finished = await runningJob({ state: 'F' });
      const queued = await runningJob({ state: 'Q', execHost: undefined });
      for (const j of [elsewhere, finished, queued]) {
        const e = await client.deliverOutput(j.id, `/tmp/STDIN.o${j.seq}`, host).catch((x: unknown) => x);
        expect(code(e), `${j.id}: ${String(e)}`).to.equal('EPERM');
        const s = await client.placeStageOut(j.id, host).catch((x: unknown) => x);
        expect(code(s), `${j.id}: ${String(s)}`).to.equal('EPERM');
      }
      const e = await client.deliverOutput('99999.srv', '/tmp/x', host).catch((x: unknown) => x);
      expect(code(e)).to.equal('EPERM');
      expect(() => statSync(join(dir, 'headnodes', 'hn1', '.stageout', `${elsewhere.id}.tar`))).to.throw();
    });

    it("a file to any path but the job's own output paths", async () => {
      const job = await runningJob({ state: 'E' });
      const host = join(dir, 'stdout-4');
      writeFileSync(host, 'ssh-rsa evil');
      const e = await client.deliverOutput(job.id, '/root/.ssh/authorized_keys', host).catch((x: unknown) => x);
      expect(code(e)).to.equal('EPERM');
      expect(() => statSync(join(dir, 'headnodes', 'hn1', 'root', '.ssh', 'authorized_keys'))).to.throw();
    });

    it('a guest-channel request for a clone on another node, for a finished job, or a clone id that is not the job’s', async () => {
      const elsewhere = await runningJob({ execHost: 'n2' });
      const finished = await runningJob({ state: 'F' });
      const stale = await runningJob();
      const before = calls.length;
      for (const cloneId of [elsewhere.cloneId!, finished.cloneId!, `j${stale.seq}-r7`, 'hn1', '../../v1/cli']) {
        const sock = await channels.open({ vmId: cloneId.replace(/[^A-Za-z0-9-]/g, '_'), kind: 'clone', headnode: 'hn1', owner: 'alice', group: 'users' });
        // The socket's clone id is what the server checks, whatever it is.
        const a = await unixHttp(sock, 'POST', '/v1/cli', JSON.stringify({ tool: 'gcqsub', argv: ['true'] }));
        expect(a.status, `${cloneId}: ${a.body}`).to.equal(403);
        expect((JSON.parse(a.body) as { code?: string }).code).to.equal('EPERM');
      }
      expect(calls.length).to.equal(before);
      await channels.closeAll();
    });

    it('a node cannot submit as a user nor reach the user API with its token', async () => {
      const auth = { authorization: `Bearer ${token}`, 'x-copper-node': 'n1', 'content-type': 'application/json' };
      const before = calls.length;
      for (const path of ['/v1/cli', '/node/v1/cli', '/node/v1/jobs', '/v1/jobs']) {
        const a = await raw(base, 'POST', path, auth, JSON.stringify({ tool: 'gcqsub', argv: ['true'] }));
        expect(a.status, path).to.equal(404);
      }
      // A clone id with a path in it does not escape to another route.
      const job = await runningJob();
      const a = await raw(base, 'POST', `/node/v1/clones/${job.cloneId}%2F..%2F..%2Fx/api/v1/cli`, auth, '{}');
      expect(a.status).to.equal(403);
      expect(calls.length).to.equal(before);
    });

    it('a body over the cap, and freeing a snapshot a job still holds', async () => {
      const job = await runningJob({ state: 'E' });
      const big = join(dir, 'big');
      writeFileSync(big, Buffer.alloc(1024 * 1024 + 128 * 1024));
      const e = await client.deliverOutput(job.id, `/tmp/STDIN.o${job.seq}`, big).catch((x: unknown) => x);
      expect(status(e), String(e)).to.equal(413);
      // Its own finished job, but other jobs still hold the snapshot; another node's job; a running one.
      const mine = await runningJob({ state: 'F' });
      const theirs = await runningJob({ state: 'F', execHost: 'n2' });
      for (const j of [mine, theirs, job]) {
        const s = await client.releaseSnapshot('snap-1', j.id).catch((x: unknown) => x);
        expect(code(s), j.id).to.equal('EPERM');
      }
      expect(serverDriver.snapshots.has('snap-1')).to.equal(true);
    });

    it('dependents reviewed on the server only for a job that ended on this node', async () => {
      const running = await runningJob();
      const theirs = await runningJob({ state: 'F', execHost: 'n2' });
      for (const id of [running.id, theirs.id, '99999.srv']) {
        const e = await client.reviewDependents(id).catch((x: unknown) => x);
        expect(code(e), id).to.equal('EPERM');
      }
      expect(reviewed).to.deep.equal([]);
      const mine = await runningJob({ state: 'F' });
      await client.reviewDependents(mine.id);
      expect(reviewed).to.deep.equal([mine.id]);
    });

    it('a node takes no snapshots', async () => {
      const e = await driver.snapshot().catch((x: unknown) => x);
      expect(e).to.be.instanceOf(NoHeadnodesError);
    });
  });
});
