import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { GcdProcess, ROOT, until } from '../helpers/gcd-process.js';

/** Debian's chromium (scripts/install-deps.sh); never a browser downloaded by playwright. */
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SHOTS = join(ROOT, 'test-artifacts', 'screenshots');
const PAGES = ['jobs', 'history', 'charts', 'headnodes', 'clones'] as const;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

describe('web dashboard in a real headless Chromium (test-double driver, real Redis)', function () {
  this.timeout(180_000);
  let g: GcdProcess;
  let base: string;
  let profile: string;
  let ctx: BrowserContext;
  const ids: Record<string, string> = {};

  function token(args: string[]): string {
    const r = g.tool('gc', ['web', 'token', ...args]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stderr).to.contain(`${base}/?token=`);
    return r.stdout.trim();
  }

  function submit(name: string, hn: string, args: string[]): string {
    const r = g.tool('gcqsub', ['--headnode', hn, '-N', name, ...args], { cwd: '/tmp' });
    expect(r.status, r.stderr).to.equal(0);
    return r.stdout.trim();
  }

  /** A fresh browser profile per user: cookies never cross users. */
  async function loginAs(tok: string, who: string): Promise<Page> {
    await ctx?.close();
    rmSync(profile, { recursive: true, force: true });
    mkdirSync(profile);
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 },
    });
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const res = await page.goto(`${base}/?token=${tok}`);
    expect(res?.status(), `log-in of ${who}`).to.equal(200);
    // The token went into an HttpOnly cookie and left the address bar.
    expect(page.url()).to.equal(`${base}/jobs`);
    const cookies = await ctx.cookies();
    expect(cookies.find((c) => c.name === 'gc_token')?.httpOnly).to.equal(true);
    return page;
  }

  async function visitAll(page: Page, who: string): Promise<Record<string, string>> {
    const text: Record<string, string> = {};
    for (const p of PAGES) {
      const res = await page.goto(`${base}/${p}`);
      expect(res?.status(), `${who} /${p}`).to.equal(200);
      if (p === 'history' || p === 'charts') {
        await page.waitForFunction(() => document.body.dataset.drawn !== undefined, undefined, { timeout: 20_000 });
        expect(await page.evaluate(() => document.body.dataset.drawn)).to.equal('1');
      }
      text[p] = await page.innerText('body');
      await page.screenshot({ path: join(SHOTS, `${who}-${p}.png`), fullPage: true });
    }
    return text;
  }

  before(async function () {
    mkdirSync(SHOTS, { recursive: true });
    profile = mkdtempSync(join(tmpdir(), 'copper-chromium-'));
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    g = new GcdProcess({
      GC_DRIVER: 'fake',
      GC_FAKE_HEADNODES: 'hn-alice:alice:physics,hn-bob:bob:chem',
      GC_SERVER_NAME: 'srv',
      GC_WEB_ADDR: `127.0.0.1:${port}`,
      GC_WEB_SAMPLE_SEC: '1',
      GC_KILL_DELAY_MS: '500',
      GC_LOCK_MS: '3000',
    });
    await g.start();
    // Real jobs of two users: finished (one failing), running, and held in the queue.
    ids.aliceDone = submit('alice-done', 'hn-alice', ['--', 'sh', '-c', 'sleep 1; exit 3']);
    ids.bobDone = submit('bob-done', 'hn-bob', ['--', 'sh', '-c', 'sleep 1; true']);
    for (const id of [ids.aliceDone, ids.bobDone]) await until(`${id} finished`, () => / F /.test(g.tool('gcqstat', ['-x', id]).stdout));
    ids.aliceRun = submit('alice-run', 'hn-alice', ['--', 'sleep', '120']);
    ids.bobHeld = submit('bob-held', 'hn-bob', ['-h', '--', 'true']);
    await until('alice-run running', () => g.tool('gcqstat', [ids.aliceRun]).stdout.includes(' R '));
    await new Promise((r) => setTimeout(r, 2500)); // a few samples for the charts
  });

  after(async function () {
    await ctx?.close();
    rmSync(profile, { recursive: true, force: true });
    await g?.cleanup();
  });

  it("a user sees their own jobs, headnode and pictures, not another user's", async function () {
    const page = await loginAs(token(['--user', 'alice']), 'alice');
    const t = await visitAll(page, 'alice');
    expect(t.jobs).to.contain('alice-run').and.contain('alice-done').and.contain(ids.aliceRun);
    expect(t.jobs).not.to.contain('bob-');
    expect(t.jobs).not.to.contain('bob');
    // Finished with its exit status; running with its live usage.
    const row = await page.goto(`${base}/jobs`).then(() => page.locator('table.finished tr', { hasText: 'alice-done' }).innerText());
    expect(row).to.match(/\t3\t/);
    const running = await page.locator('table.running tr', { hasText: 'alice-run' }).innerText();
    expect(running)
      .to.match(/00:00:\d\d/)
      .and.contain('1 cpu');
    expect(t.history).to.contain('alice-done').and.not.contain('bob');
    expect(t.headnodes).to.contain('hn-alice').and.not.contain('hn-bob');
    expect(t.clones).to.contain(ids.aliceRun);
    // The timeline has one bar per started job of hers: alice-done and alice-run.
    await page.goto(`${base}/history`);
    await page.waitForFunction(() => document.body.dataset.drawn !== undefined);
    expect(await page.getAttribute('#timeline', 'data-bars')).to.equal('2');
    await page.goto(`${base}/charts`);
    await page.waitForFunction(() => document.body.dataset.drawn !== undefined);
    expect(Number(await page.getAttribute('#depth', 'data-samples'))).to.be.greaterThan(1);
    // The raw queue is for admins.
    expect((await page.goto(`${base}/admin/queue/`))?.status()).to.equal(403);
  });

  it('the other user sees theirs: the held job with its reason', async function () {
    const page = await loginAs(token(['--user', 'bob']), 'bob');
    const t = await visitAll(page, 'bob');
    expect(t.jobs).to.contain('bob-held').and.contain('bob-done').and.not.contain('alice');
    expect(await page.goto(`${base}/jobs`).then(() => page.locator('table.queued tr', { hasText: 'bob-held' }).innerText())).to.match(/held|Hold/i);
    const api = (await (await page.request.get(`${base}/api/jobs`)).json()) as { jobs: Array<{ spec: { user: string } }> };
    expect(api.jobs.map((j) => j.spec.user)).to.deep.equal(['bob', 'bob']);
  });

  it("an admin sees everybody's jobs and the raw BullMQ queue", async function () {
    const page = await loginAs(token(['--admin']), 'admin');
    const t = await visitAll(page, 'admin');
    for (const n of ['alice-done', 'alice-run', 'bob-done', 'bob-held']) expect(t.jobs).to.contain(n);
    expect(t.headnodes).to.contain('hn-alice').and.contain('hn-bob');
    await page.goto(`${base}/history`);
    await page.waitForFunction(() => document.body.dataset.drawn !== undefined);
    expect(await page.getAttribute('#timeline', 'data-bars')).to.equal('3');
    // Each bar is drawn, with a width on the time axis (Chart.js's own geometry).
    const widths = await page.evaluate(() => {
      const c = (
        window as unknown as {
          Chart: { getChart(id: string): { data: { datasets: unknown[] }; getDatasetMeta(i: number): { data: Array<{ width: number; x: number }> } } };
        }
      ).Chart.getChart('timeline');
      return c.data.datasets.flatMap((_d, i) => c.getDatasetMeta(i).data.map((b) => Math.abs(b.width))).filter((w) => Number.isFinite(w) && w > 0);
    });
    expect(widths).to.have.length(3);
    for (const w of widths) expect(w).to.be.greaterThan(2);
    const res = await page.goto(`${base}/admin/queue/`);
    expect(res?.status()).to.equal(200);
    await page.waitForSelector('text=jobs', { timeout: 20_000 });
    await page.screenshot({ path: join(SHOTS, 'admin-bull-board.png'), fullPage: true });
  });

  it('a forged, expired or missing token is refused', async function () {
    const good = token(['--user', 'alice', '--ttl', '1']);
    const [payload, mac] = good.split('.');
    // Claim to be bob with alice's signature.
    const forged = `${Buffer.from(JSON.stringify({ u: 'bob', e: Math.floor(Date.now() / 1000) + 3600 })).toString('base64url')}.${mac}`;
    await ctx?.close();
    rmSync(profile, { recursive: true, force: true });
    ctx = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    let res = await page.goto(`${base}/jobs?token=${forged}`);
    expect(res?.status()).to.equal(401);
    expect(await page.innerText('body'))
      .to.contain('bad signature')
      .and.not.contain('bob-');
    await page.screenshot({ path: join(SHOTS, 'refused.png') });
    res = await page.goto(`${base}/jobs?token=${payload}`);
    expect(res?.status()).to.equal(401);
    await new Promise((r) => setTimeout(r, 2100));
    res = await page.goto(`${base}/jobs?token=${good}`);
    expect(res?.status()).to.equal(401);
    expect(await page.innerText('body')).to.contain('expired');
    res = await page.goto(`${base}/api/jobs`);
    expect(res?.status()).to.equal(401);
    // A user cannot mint an admin token or another's through gc: the host's tool is the admin's
    // own; the channel path is covered by the unit test of the tool.
    const bad = g.tool('gc', ['web', 'token']);
    expect(bad.status).to.not.equal(0);
    expect(bad.stderr).to.match(/--user USER or --admin/);
  });
});
