import { expect } from 'chai';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseQuotaText, type QuotaConfig } from '../../src/config/quotas.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { QuotaError, UsageError } from '../../src/errors.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { ADMIN } from '../../src/scheduler/actor.js';
import { GcdProcess } from '../helpers/gcd-process.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { testSpec } from '../helpers/jobs.js';
import { schedulerOptions } from '../helpers/scheduler.js';

const cfgOf = (...l: string[]): QuotaConfig => parseQuotaText(l.join('\n') + '\n', 'quotas.yaml');
const USER = ADMIN;

/** Usage counts and fair-share keys: none may outlive the jobs. */
async function usageKeys(r: TestRedis): Promise<string[]> {
  return (await r.client.keys('copper:usage:*')).sort();
}

describe('quota counts in Redis, shared by every gcd (issue 13 item 11, issue 14 item 2)', function () {
  let r: TestRedis;
  let driver: FakeDriver;
  const scheds: Scheduler[] = [];

  beforeEach(async function () {
    r = await startTestRedis();
    const deliverRoot = join(r.dir, 'headnodes');
    mkdirSync(deliverRoot);
    // A slow snapshot widens the window between the early max_queued look and the records' write.
    driver = new FakeDriver({ deliverRoot, headnodes: new Set(['hn1']), snapshotDir: join(r.dir, 'snaps'), snapshotDelayMs: 150 });
  });

  afterEach(async function () {
    for (const s of scheds.splice(0)) await s.close();
    await driver.close();
    await r.stop();
  });

  function scheduler(cfg: QuotaConfig, over: Parameters<typeof schedulerOptions>[2] = {}): Scheduler {
    const s = new Scheduler(schedulerOptions(r, driver, { quotas: () => cfg, retryDelayMs: 100, ...over }));
    scheds.push(s);
    return s;
  }

  it('20 parallel submissions against max_queued=5: exactly 5 accepted, the others refused naming the limit', async function () {
    const s = scheduler(cfgOf('defaults: {max_queued: 5}'), { dispatch: false });
    await s.start();
    const res = await Promise.allSettled(Array.from({ length: 20 }, () => s.submit([testSpec({ argv: ['true'] })])));
    const ok = res.filter((x) => x.status === 'fulfilled');
    const refused = res.filter((x): x is PromiseRejectedResult => x.status === 'rejected');
    expect(ok.length).to.equal(5);
    expect(refused.length).to.equal(15);
    for (const x of refused) {
      expect(x.reason).to.be.instanceOf(QuotaError);
      expect(String((x.reason as Error).message)).to.match(/would exceed max_queued=5 for user alice \(has 5 queued or running, submitting 1\)/);
    }
    expect((await s.store.list()).length).to.equal(5);
    const u = await s.usage.read('alice', 'users', 'workq');
    expect(u.users.get('alice')?.queued).to.equal(5);
    // Refused submissions leave no snapshot behind: one per accepted job.
    expect((await driver.listSnapshots()).length).to.equal(5);
  });

  it('two dispatchers on one Redis never run more than max_running=2 together', async function () {
    const cfg = cfgOf('defaults: {max_running: 2}');
    const a = scheduler(cfg, { capacity: { ncpus: 8, memMiB: 8192 } });
    const b = scheduler(cfg, { capacity: { ncpus: 8, memMiB: 8192 } });
    await a.start();
    await b.start();
    const log = join(r.dir, 'overlap');
    writeFileSync(log, '');
    const cmd = `echo "$(date +%s%N) 1" >> ${log}; sleep 0.4; echo "$(date +%s%N) -1" >> ${log}`;
    const jobs = [];
    for (let i = 0; i < 8; i++) jobs.push(...(await a.submit([testSpec({ argv: ['sh', '-c', cmd] })])));
    for (const j of jobs) expect((await a.waitFor(j.id)).exitStatus).to.equal(0);
    const events = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' ').map(Number) as [number, number])
      .sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    let now = 0;
    let most = 0;
    for (const [, d] of events) {
      now += d;
      most = Math.max(most, now);
    }
    expect(events.length).to.equal(16);
    expect(most).to.equal(2, 'never above max_running, and the limit was reached');
    expect(await usageKeys(r)).to.deep.equal([], 'no count or fair-share key outlives the jobs');
  });

  it('an array %max throttle holds across two dispatchers', async function () {
    const a = scheduler(cfgOf(''), { capacity: { ncpus: 8, memMiB: 8192 } });
    const b = scheduler(cfgOf(''), { capacity: { ncpus: 8, memMiB: 8192 } });
    await a.start();
    await b.start();
    const log = join(r.dir, 'arr');
    writeFileSync(log, '');
    const cmd = `echo "$(date +%s%N) 1" >> ${log}; sleep 0.3; echo "$(date +%s%N) -1" >> ${log}`;
    const [parent] = await a.submit([testSpec({ argv: ['sh', '-c', cmd] })], { array: { indices: [1, 2, 3, 4, 5, 6], max: 2 } });
    await a.waitFor(parent.id);
    let now = 0;
    let most = 0;
    for (const [, d] of readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' ').map(Number) as [number, number])
      .sort((x, y) => x[0] - y[0] || x[1] - y[1])) {
      now += d;
      most = Math.max(most, now);
    }
    expect(most).to.equal(2);
    expect(await usageKeys(r)).to.deep.equal([]);
  });

  it('gcqalter cannot go past a limit submission enforces: max_job_walltime, the -p range', async function () {
    const s = scheduler(cfgOf('defaults: {max_job_walltime: 01:00:00}'), { dispatch: false });
    await s.start();
    const [j] = await s.submit([testSpec({ walltimeSec: 600 })]);
    try {
      await s.alter(USER, j.id, { walltimeSec: 7200 });
      expect.fail('walltime above max_job_walltime was accepted');
    } catch (e) {
      expect(e).to.be.instanceOf(QuotaError);
      expect((e as Error).message).to.equal('walltime=02:00:00 exceeds max_job_walltime=01:00:00 for user alice');
    }
    try {
      await s.alter(USER, j.id, { priority: 5000 });
      expect.fail('-p 5000 was accepted');
    } catch (e) {
      expect(e).to.be.instanceOf(UsageError);
    }
    await s.alter(USER, j.id, { walltimeSec: 1800, priority: 10 });
    const now = await s.store.get(j.id);
    expect(now.spec.walltimeSec).to.equal(1800);
    expect(now.spec.priority).to.equal(10);
  });

  it("-p orders a user's own jobs but does not jump other users' fair share", async function () {
    const order = join(r.dir, 'order');
    writeFileSync(order, '');
    const cfg = cfgOf('');
    const sub = scheduler(cfg, { dispatch: false });
    await sub.start();
    const job = (user: string, tag: string, priority: number) => testSpec({ user, priority, argv: ['sh', '-c', `echo ${tag} >> ${order}`], headnode: 'hn1' });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(...(await sub.submit([job('alice', `a${i}`, 0)])).map((x) => x.id));
    for (let i = 0; i < 4; i++) ids.push(...(await sub.submit([job('bob', `b${i}`, 1000)])).map((x) => x.id));
    ids.push(...(await sub.submit([job('alice', 'aHi', 500)])).map((x) => x.id));
    const run = scheduler(cfg, { capacity: { ncpus: 1, memMiB: 8192 }, concurrency: 1 });
    await run.start();
    for (const id of ids) await run.waitFor(id);
    const seen = readFileSync(order, 'utf8').trim().split('\n');
    // Users alternate turns whatever bob's -p; alice's -p 500 job takes her first turn.
    const firstFour = seen.slice(0, 4);
    expect(firstFour.filter((t) => t.startsWith('b')).length).to.equal(2, `bob took more than his share: ${seen.join(' ')}`);
    expect(seen.filter((t) => t.startsWith('a'))[0]).to.equal('aHi', `alice's own order: ${seen.join(' ')}`);
  });

  it('counts are rebuilt from the job records at start (a wrong count is put right)', async function () {
    const s = scheduler(cfgOf('defaults: {max_queued: 3}'), { dispatch: false });
    await s.start();
    await s.submit([testSpec()]);
    await s.submit([testSpec()]);
    // As if a crash (or an older gcd) had left the counts wrong.
    await r.client.hset('copper:usage:u:alice', 'queued', 40);
    await r.client.hset('copper:usage:u:nobody', 'queued', 3);
    await s.close();
    scheds.pop();
    const again = scheduler(cfgOf('defaults: {max_queued: 3}'), { dispatch: false });
    await again.start();
    expect((await again.usage.read('alice', 'users', 'workq')).users.get('alice')?.queued).to.equal(2);
    expect(await r.client.exists('copper:usage:u:nobody')).to.equal(0);
    await again.submit([testSpec()]);
    try {
      await again.submit([testSpec()]);
      expect.fail('a fourth job was accepted under max_queued=3');
    } catch (e) {
      expect(e).to.be.instanceOf(QuotaError);
    }
  });
});

describe('max_queued through gcd and 20 parallel gcqsub processes', function () {
  let g: GcdProcess;
  before(async function () {
    g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_SERVER_NAME: 'srv' });
    mkdirSync(join(g.stateDir, 'config'), { recursive: true });
    writeFileSync(join(g.stateDir, 'config', 'quotas.yaml'), 'defaults: {max_queued: 5}\n');
    await g.start();
  });
  after(async function () {
    await g.cleanup();
  });

  it('exactly 5 accepted; each refusal is one line naming max_queued', async function () {
    const runs = await Promise.all(Array.from({ length: 20 }, () => g.toolAsync('gcqsub', ['--headnode', 'hn1', '-h', '--', 'true'])));
    const ok = runs.filter((x) => x.status === 0);
    expect(ok.length).to.equal(5, runs.map((x) => x.stderr).join(''));
    for (const x of runs.filter((y) => y.status !== 0)) expect(x.stderr).to.match(/would exceed max_queued=5 for user alice/);
    const stat = g.tool('gcqstat', []);
    expect(stat.stdout.split('\n').filter((l) => / H /.test(l)).length).to.equal(5);
  });
});
