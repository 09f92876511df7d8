/**
 * Issue 13 item 9: byte quotas per user from quotas.yaml. A submission whose snapshot would
 * take its user above `snapshot_bytes` is refused naming the quota (and the snapshot dropped);
 * output kept on the host counts toward `undelivered_bytes` and what would go above it is
 * dropped with the reason; `stageout_bytes` caps a job's stage-out. Real redis-server and
 * BullMQ; the test-double driver's snapshots count 512 MiB each.
 */
import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseQuotaText } from '../../src/config/quotas.js';
import { FAKE_SNAPSHOT_BYTES, FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { QuotaError } from '../../src/errors.js';
import { ADMIN } from '../../src/scheduler/actor.js';
import { undeliveredBytes } from '../../src/scheduler/byte-quotas.js';
import type { Scheduler } from '../../src/scheduler/scheduler.js';
import type { TestRedis } from '../helpers/env.js';
import { testSpec } from '../helpers/jobs.js';
import { startSchedulerFixture, stopSchedulerFixture } from '../helpers/scheduler.js';

const QUOTAS = `
defaults:
  snapshot_bytes: 4gb
users:
  alice:
    snapshot_bytes: 1gb
    undelivered_bytes: 1mb
    stageout_bytes: 2mb
    shared_bytes: 10gb
`;

describe('byte quotas (issue 13 item 9)', function () {
  let r: TestRedis;
  let driver: FakeDriver;
  let sched: Scheduler;
  const incarnations = new Map([['hn1', 'first']]);

  beforeEach(async function () {
    const cfg = parseQuotaText(QUOTAS, 'quotas.yaml');
    ({ r, driver, sched } = await startSchedulerFixture({
      driver: (o) => new FakeDriver({ ...o, incarnations }),
      scheduler: { quotas: () => cfg },
    }));
  });
  afterEach(async function () {
    incarnations.set('hn1', 'first');
    await stopSchedulerFixture({ sched, driver, r });
  });

  it('refuses a submission over snapshot_bytes, naming the quota, and drops its snapshot', async function () {
    expect(FAKE_SNAPSHOT_BYTES).to.equal(512 * 1024 * 1024);
    await sched.submit([testSpec({ argv: ['true'] })], { hold: true });
    await sched.submit([testSpec({ argv: ['true'] })], { hold: true });
    expect(driver.snapshots.size).to.equal(2);
    const err = await sched.submit([testSpec({ argv: ['true'] })], { hold: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(QuotaError);
    expect((err as QuotaError).message).to.equal('would exceed snapshot_bytes=1gb for user alice (holds 1gb in 2 snapshots, adding 512mb)');
    expect((err as QuotaError).fields).to.include({ limit: 'snapshot_bytes', entity: 'user alice' });
    expect(driver.snapshots.size).to.equal(2, "the refused submission's snapshot is released");
    expect((await sched.list(ADMIN, { includeFinished: true })).length).to.equal(2, 'nothing queued for it');
    // Another user (the defaults' 4gb) is not affected by alice's holdings.
    await sched.submit([testSpec({ argv: ['true'], user: 'bob' })], { hold: true });
    // An array shares one snapshot: 100 tasks count once.
    const held = await sched.list(ADMIN);
    for (const j of held) await sched.delete(ADMIN, j.id);
    await sched.submit([testSpec({ argv: ['true'] })], { hold: true, array: { indices: Array.from({ length: 100 }, (_, i) => i) } });
    await sched.submit([testSpec({ argv: ['true'] })], { hold: true });
  });

  it('lets exactly 2 of 6 parallel submissions through snapshot_bytes=1gb (512 MiB snapshots)', async function () {
    const runs = await Promise.allSettled(Array.from({ length: 6 }, () => sched.submit([testSpec({ argv: ['true'] })], { hold: true })));
    const refused = runs.filter((r) => r.status === 'rejected');
    expect(runs.filter((r) => r.status === 'fulfilled')).to.have.length(2);
    for (const r of refused) expect(String(r.reason)).to.match(/would exceed snapshot_bytes=1gb for user alice \(holds 1gb in 2 snapshots, adding 512mb\)/);
    expect(driver.snapshots.size).to.equal(2, "the refused submissions' snapshots are released");
    expect((await sched.list(ADMIN, { includeFinished: true })).length).to.equal(2);
  });

  it('counts output kept on the host toward undelivered_bytes and drops what goes above it', async function () {
    const sixHundredKiB = ['sh', '-c', 'head -c 614400 /dev/zero | tr "\\0" x'];
    const [a] = await sched.submit([testSpec({ argv: sixHundredKiB, name: 'a' })], { hold: true });
    const [b] = await sched.submit([testSpec({ argv: sixHundredKiB, name: 'b' })], { hold: true });
    // Their headnode is re-created: neither output may be delivered, so it stays on the host.
    incarnations.set('hn1', 'second');
    await sched.release(ADMIN, a.id);
    const doneA = await sched.waitFor(a.id);
    expect(doneA.comment).to.match(/kept on the host at/);
    const undelivered = join(r.dir, 'undelivered');
    const counted = await undeliveredBytes(undelivered, 'alice', async () => undefined);
    console.log(`      alice's undelivered output counted: ${counted} bytes`);
    expect(counted).to.be.within(600 * 1024, 700 * 1024);
    expect(readFileSync(join(undelivered, a.id, '.user'), 'utf8')).to.equal('alice\n');
    await sched.release(ADMIN, b.id);
    const doneB = await sched.waitFor(b.id);
    expect(doneB.comment, doneB.comment).to.match(
      /dropped: would exceed undelivered_bytes=1mb for user alice \(holds \d+kb of output on the host, adding \d+kb\)/,
    );
    expect(existsSync(join(undelivered, b.id, 'b.o2')), 'the dropped stdout is not kept').to.equal(false);
    expect(await undeliveredBytes(undelivered, 'alice', async () => undefined)).to.be.below(1024 * 1024, 'alice stays within her quota');
  });

  it('keeps one of 4 outputs of 600 KiB ending at once under undelivered_bytes=1mb, drops 3', async function () {
    const sixHundredKiB = ['sh', '-c', 'head -c 614400 /dev/zero | tr "\\0" x'];
    // One array (one snapshot under alice's snapshot_bytes): its 4 tasks run and end together.
    const [arr, ...tasks] = await sched.submit([testSpec({ argv: sixHundredKiB, name: 'p' })], { hold: true, array: { indices: [1, 2, 3, 4] } });
    incarnations.set('hn1', 'second');
    await sched.release(ADMIN, arr.id);
    const done = await Promise.all(tasks.map((j) => sched.waitFor(j.id)));
    // Each comment says what became of the task's stdout (its empty stderr is kept: 0 bytes).
    const kept = done.filter((d) => /p\.o1\.\d[^;]*; kept on the host at/.test(d.comment ?? ''));
    const dropped = done.filter((d) => /p\.o1\.\d[^;]*; dropped: would exceed undelivered_bytes=1mb for user alice/.test(d.comment ?? ''));
    expect(kept, done.map((d) => d.comment).join('\n')).to.have.length(1);
    expect(dropped).to.have.length(3);
    expect(await undeliveredBytes(join(r.dir, 'undelivered'), 'alice', async () => undefined)).to.be.below(1024 * 1024);
  });

  it("caps a job's stage-out at stageout_bytes", async function () {
    const [a] = await sched.submit([testSpec({ argv: ['true'] })]);
    await sched.waitFor(a.id);
    const [b] = await sched.submit([testSpec({ argv: ['true'], user: 'bob' })]);
    await sched.waitFor(b.id);
    const caps = driver.stageOuts.map((s) => s.req.capBytes);
    expect(caps[0]).to.equal(2 * 1024 * 1024, "alice's stage-out cap is her quota");
    expect(caps[1]).to.be.greaterThan(2 * 1024 * 1024, 'bob has no such quota');
  });
});
