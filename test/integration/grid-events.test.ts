import { expect } from 'chai';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AccountingLog, AccountingReader } from '../../src/accounting/accounting-log.js';
import type { CloneHandle, CloneOptions } from '../../src/drivers/driver.js';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { TransitionConsumer, TransitionPublisher } from '../../src/grid/transition-stream.js';
import { JobLifecycle } from '../../src/lifecycle/from-job-events.js';
import { JobMetrics } from '../../src/metrics/job-metrics.js';
import { createMailNotifier, type MailNotifier } from '../../src/notify/mail/index.js';
import type { JobTransition } from '../../src/queue/job-events.js';
import { keysFor } from '../../src/queue/keys.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { until, type GcdProcess } from '../helpers/gcd-process.js';
import { NetnsGrid, fakeGridServerEnv } from '../helpers/netns-grid.js';
import { testSpec } from '../helpers/jobs.js';
import { schedulerOptions } from '../helpers/scheduler.js';
import { SmtpRecorder } from '../helpers/smtp-recorder.js';

/** The node's driver: the server's snapshot taken as present, as the node's snapshot cache would make it. */
class NodeFakeDriver extends FakeDriver {
  override async clone(o: CloneOptions): Promise<CloneHandle> {
    this.snapshots.add(o.snapshotId);
    return super.clone(o);
  }
}

/** The server's observers as compose.ts wires them: accounting, metrics, mail, all on Scheduler.events. */
interface ServerSide {
  sched: Scheduler;
  consumer: TransitionConsumer;
  accounting: AccountingLog;
  lifecycle: JobLifecycle;
  metrics: JobMetrics;
  mail: MailNotifier;
  heard: JobTransition[];
  close(): Promise<void>;
}

/**
 * The grid's transitions on one real redis-server: a server Scheduler that runs no jobs, with
 * the accounting log, metrics and job mail (to a real SMTP server process) on its JobEvents,
 * and a node Scheduler that runs them (test-double driver), publishing its transitions. The
 * server hears the node's R, E and F through the stream, once each, across its own restart.
 */
describe('grid: a node’s job transitions reach the server’s listeners (real redis-server, real SMTP server)', function () {
  this.timeout(90_000);
  let r: TestRedis;
  let smtp: SmtpRecorder;
  let serverDriver: FakeDriver;
  let nodeDriver: NodeFakeDriver;
  let node: Scheduler;
  let publisher: TransitionPublisher;
  let server: ServerSide | undefined;
  let acctDir: string;
  const keys = keysFor('copper');

  async function startServer(): Promise<ServerSide> {
    const sched = new Scheduler(
      schedulerOptions(r, serverDriver, {
        stateDir: join(r.dir, 'server'),
        dispatch: false,
        host: { name: 'srv', isServer: true, gateDelayMs: 200, gate: async () => undefined },
      }),
    );
    const lifecycle = new JobLifecycle();
    const accounting = new AccountingLog(acctDir);
    lifecycle.add(accounting);
    const metrics = new JobMetrics({ jobs: () => sched.store.list(), capacity: () => ({ limits: sched.capacity.limits, used: sched.capacity.used }) });
    lifecycle.add(metrics);
    lifecycle.attach(sched.events);
    const mail = createMailNotifier({
      redis: r.client,
      keys,
      serverName: 'srv',
      jobs: sched.store,
      settings: { smtpUrl: smtp.url, sendmailPath: '/bin/false', from: 'copper@srv', domain: 'example.org' },
    });
    const unsubscribeMail = sched.events.subscribe((t) => (t.replay ? undefined : mail.onTransition(t)));
    const heard: JobTransition[] = [];
    sched.events.subscribe((t) => void heard.push(t));
    await sched.start();
    const consumer = new TransitionConsumer({ redis: r.client, keys, self: 'srv', events: sched.events, blockMs: 500 });
    await consumer.start();
    return {
      sched,
      consumer,
      accounting,
      lifecycle,
      metrics,
      mail,
      heard,
      async close() {
        await consumer.close();
        await sched.close();
        unsubscribeMail();
        await mail.close();
        await lifecycle.close();
        await accounting.flush();
      },
    };
  }

  before(async () => {
    r = await startTestRedis();
    smtp = await SmtpRecorder.start();
    acctDir = join(r.dir, 'accounting');
    const deliverRoot = join(r.dir, 'headnodes');
    for (const d of [deliverRoot, join(r.dir, 'server'), join(r.dir, 'node')]) mkdirSync(d);
    serverDriver = new FakeDriver({ deliverRoot, headnodes: new Set(['hn1']) });
    nodeDriver = new NodeFakeDriver({ deliverRoot, headnodes: new Set(['hn1']) });
    server = await startServer();
    node = new Scheduler(
      schedulerOptions(r, nodeDriver, {
        stateDir: join(r.dir, 'node'),
        host: { name: 'n1', isServer: false, gateDelayMs: 200, gate: async () => undefined },
      }),
    );
    publisher = new TransitionPublisher({ redis: r.client, keys, origin: 'n1', maxLen: 1000 });
    publisher.attach(node.events);
    await node.start();
  });

  after(async () => {
    await server?.close();
    await node?.close();
    await publisher?.close();
    await nodeDriver?.close();
    await serverDriver?.close();
    await smtp?.stop();
    await r?.stop();
  });

  const eRecords = async (id: string): Promise<number> => (await new AccountingReader(acctDir).recordsOf(id)).filter((l) => l.type === 'E').length;
  const endMails = (id: string): number => smtp.about(id).filter((m) => /Execution terminated|ended|terminated/i.test(m.subject + m.body)).length;
  const eventCount = async (s: ServerSide, event: string): Promise<number> => {
    const m = /copper_job_events_total\{event="(\w+)",queue="workq"\} (\d+)/g;
    let n = 0;
    for (const x of (await s.metrics.text()).body.matchAll(m)) if (x[1] === event) n += Number(x[2]);
    return n;
  };

  it('a job run on the node: the server writes its S and E records once, mails its end, counts it', async function () {
    const s = server!;
    const [job] = await s.sched.submit([testSpec({ argv: ['sh', '-c', 'echo on-node'], mailPoints: 'be', mailUsers: ['alice@example.org'] })]);
    const done = await until('job F', async () => {
      const j = await s.sched.store.get(job.id);
      return j.state === 'F' ? j : undefined;
    });
    expect(done.execHost, 'the node ran it').to.equal('n1');
    expect(done.exitStatus).to.equal(0);
    // The server's JobEvents heard the node's run, exit and finish, in that order, once each.
    await until('server heard F', () => s.heard.some((t) => t.jobId === job.id && t.to === 'F'));
    await s.lifecycle.idle();
    await s.accounting.flush();
    const mine = s.heard.filter((t) => t.jobId === job.id).map((t) => t.to);
    expect(mine).to.deep.equal(['R', 'E', 'F']);
    const types = (await new AccountingReader(acctDir).recordsOf(job.id)).map((l) => l.type);
    expect(types).to.deep.equal(['S', 'E']);
    const e = (await new AccountingReader(acctDir).recordsOf(job.id)).find((l) => l.type === 'E')!;
    expect(e.attrs.Exit_status).to.equal('0');
    await until('begin and end mails', () => smtp.about(job.id).length === 2, 20_000);
    expect(endMails(job.id)).to.be.greaterThanOrEqual(1);
    expect(await eventCount(s, 'started')).to.equal(1);
    expect(await eventCount(s, 'ended')).to.equal(1);
    expect(s.consumer.count).to.equal(3);
  });

  it('a server restart in the middle: the transitions the node made meanwhile are told once, none twice', async function () {
    const before = server!;
    const [job] = await before.sched.submit([testSpec({ argv: ['sh', '-c', 'sleep 1; echo later'], mailPoints: 'e', mailUsers: ['alice@example.org'] })]);
    await until('job R on the node', async () => (await before.sched.store.get(job.id)).state === 'R');
    await server!.close();
    server = undefined;
    // The node finishes the job while no server listens.
    await until('job F', async () => (await node.store.get(job.id)).state === 'F');
    await publisher.flush();
    expect(await eRecords(job.id), 'nobody wrote E while the server was down').to.equal(0);
    server = await startServer();
    const s = server;
    await until('E record written', async () => (await eRecords(job.id)) === 1);
    await s.lifecycle.idle();
    await s.accounting.flush();
    await until('end mail', () => smtp.about(job.id).length === 1, 20_000);
    // Nothing more comes: the first job's entries (read before the restart) are not told again.
    await new Promise((res) => setTimeout(res, 1500));
    await s.accounting.flush();
    const types = (await new AccountingReader(acctDir).recordsOf(job.id)).map((l) => l.type);
    expect(types).to.deep.equal(['S', 'E']);
    expect(smtp.about(job.id)).to.have.length(1);
    const firstJobs = s.heard.filter((t) => t.jobId !== job.id && t.record.execHost === 'n1');
    expect(firstJobs, 'entries read before the restart are not told again').to.deep.equal([]);
    expect(s.consumer.count).to.equal(2, 'E and F of the job the node finished while the server was down');
    expect(await eventCount(s, 'ended')).to.equal(1);
  });

  it('the stream is bounded and its keys are named in keys.ts', async function () {
    const len = await r.client.xlen(keys.events);
    expect(len).to.be.within(1, 1000);
    expect(await r.client.exists(keys.eventsCursor)).to.equal(1);
    const last = await r.client.xrevrange(keys.events, '+', '-', 'COUNT', 1);
    expect(await r.client.get(keys.eventsCursor)).to.equal(last[0]?.[0]);
  });
});

/**
 * The same through real processes: a server gcd that runs no jobs and one `gcd --node` in a
 * network namespace (the netns harness), the node's transitions reaching the server over the
 * server's Redis on TCP; the server's accounting log and job mail hear the node's job.
 */
describe('grid: gcd server and gcd --node processes, the node’s job in the server’s accounting and mail (netns, test-double driver)', function () {
  this.timeout(180_000);
  const grid = new NetnsGrid();
  let g: GcdProcess;
  let smtp: SmtpRecorder;

  before(async function () {
    if (process.getuid?.() !== 0) throw new Error('the grid harness makes network namespaces: run as root');
    smtp = await SmtpRecorder.start();
    grid.up();
    g = await grid.startServer(fakeGridServerEnv(2000, { GC_SMTP_URL: smtp.url }));
    await grid.addNode('n1', { ncpus: 2, memMiB: 2048 });
  });
  after(async function () {
    await grid.teardown();
    await smtp?.stop();
  });

  it('the server writes the node’s job S and E records once and mails its end once', async function () {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', '-m', 'e', '-M', 'alice@example.org', '--', 'echo', 'hi']);
    expect(r.status, r.stderr).to.equal(0);
    const id = r.stdout.trim();
    const acct = join(g.stateDir, 'accounting');
    const records = async (): Promise<string[]> => (existsSync(acct) ? (await new AccountingReader(acct).recordsOf(id)).map((l) => l.type) : []);
    await until('E record on the server', async () => (await records()).includes('E'), 60_000);
    await until('end mail', () => smtp.about(id).length >= 1, 20_000);
    await new Promise((res) => setTimeout(res, 1000));
    expect(await records()).to.deep.equal(['Q', 'S', 'E']);
    expect(smtp.about(id)).to.have.length(1);
    const q = JSON.parse(g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]).stdout) as { Jobs: Record<string, { exec_host?: string }> };
    expect(q.Jobs[id]?.exec_host ?? '').to.match(/^n1/);
  });
});
