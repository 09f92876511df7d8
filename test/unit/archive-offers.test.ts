import { expect } from 'chai';
import { request } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChannelServer } from '../../src/api/channels.js';
import type { GuestIdentity } from '../../src/headnodes/types.js';

/**
 * A stage-out archive offered on a headnode's API channel (real ChannelServer sockets): only that
 * headnode's channel gets it, once, and never more bytes than announced.
 */
describe('stage-out archive offers on guest channels', function () {
  this.timeout(20_000);
  let dir: string;
  let channels: ChannelServer;
  let apiCalls: string[];
  const id = (vmId: string, kind: GuestIdentity['kind'] = 'headnode'): GuestIdentity => ({ vmId, kind, headnode: 'hn', owner: 'alice', group: 'alice' });

  /** GET `path` on `vmId`'s channel: status, body, and whether the body came whole. */
  const get = (vmId: string, path: string): Promise<{ status: number; body: Buffer; whole: boolean }> =>
    new Promise((resolve, reject) => {
      const req = request({ socketPath: channels.pathFor(vmId), path, method: 'GET' }, (res) => {
        const parts: Buffer[] = [];
        let whole = false;
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => (whole = true));
        res.on('close', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts), whole: whole && res.complete }));
        res.on('error', () => undefined);
      });
      req.on('error', reject);
      req.end();
    });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'so-offers-'));
    apiCalls = [];
    channels = new ChannelServer(dir, (req, res) => {
      apiCalls.push(req.url ?? '');
      res.writeHead(204).end();
    });
    await channels.open(id('hn'));
    await channels.open(id('hn-other'));
    await channels.open(id('hn.c1', 'clone'));
  });
  afterEach(async () => {
    await channels.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it('the headnode it is for gets the bytes once; a second GET is refused', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 7, 'x');
    const offer = channels.archives.offer('hn', data.length, async (sink) => {
      for (let o = 0; o < data.length; o += 1024 * 1024) await sink.write(data.subarray(o, o + 1024 * 1024));
      return data.length;
    });
    const first = await get('hn', offer.path);
    expect(first.status).to.equal(200);
    expect(first.body.equals(data)).to.equal(true);
    expect(await offer.served).to.equal(data.length);
    expect((await get('hn', offer.path)).status).to.equal(404);
    expect(apiCalls).to.deep.equal([]);
  });

  it("another VM's channel (another headnode, a clone) cannot take it, and the offer stands", async () => {
    const offer = channels.archives.offer('hn', 5, async (sink) => {
      await sink.write(Buffer.from('hello'));
      return 5;
    });
    expect((await get('hn-other', offer.path)).status).to.equal(404);
    expect((await get('hn.c1', offer.path)).status).to.equal(404);
    const r = await get('hn', offer.path);
    expect([r.status, r.body.toString()]).to.deep.equal([200, 'hello']);
  });

  it('a producer sending more than announced is cut: the headnode sees a short body, the offer fails', async () => {
    const offer = channels.archives.offer('hn', 10, async (sink) => {
      await sink.write(Buffer.alloc(8));
      await sink.write(Buffer.alloc(8));
      return 16;
    });
    const r = await get('hn', offer.path);
    expect(r.whole).to.equal(false);
    expect(r.body.length).to.be.at.most(10);
    let err: unknown;
    await offer.served.catch((e: unknown) => (err = e));
    expect(String(err)).to.match(/longer than the 10 bytes/);
  });

  it('an offer withdrawn or not taken in time is gone; other paths still reach the API', async () => {
    const gone = channels.archives.offer('hn', 1, async () => 0);
    gone.withdraw();
    expect((await get('hn', gone.path)).status).to.equal(404);
    const late = channels.archives.offer('hn', 1, async () => 0, 50);
    let err: unknown;
    await late.served.catch((e: unknown) => (err = e));
    expect(String(err)).to.match(/did not fetch/);
    expect((await get('hn', late.path)).status).to.equal(404);
    expect((await get('hn', '/v1/jobs')).status).to.equal(204);
    expect(apiCalls).to.deep.equal(['/v1/jobs']);
  });
});
