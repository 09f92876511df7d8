import { expect } from 'chai';
import { GcdProcess, until } from '../helpers/gcd-process.js';
import { PrometheusProcess, freePort } from '../helpers/prometheus-process.js';

/** `copper_jobs` as Prometheus returns it: "state user" -> count, zeros left out. */
async function jobsByStateUser(prom: PrometheusProcess): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const s of await prom.query('copper_jobs')) {
    const n = Number(s.value[1]);
    if (n) out[`${s.metric.state} ${s.metric.user}`] = n;
  }
  return out;
}

async function scalar(prom: PrometheusProcess, q: string): Promise<number | undefined> {
  const r = await prom.query(q);
  return r.length ? Number(r[0].value[1]) : undefined;
}

/** Poll Prometheus until `read` equals `want` (it scrapes every second), then assert it. */
async function settle<T>(what: string, read: () => Promise<T>, want: T, timeoutMs = 20_000): Promise<void> {
  let last: T | undefined;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    last = await read();
    if (JSON.stringify(last) === JSON.stringify(want)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  expect(last, what).to.deep.equal(want);
}

describe('metrics: a real Prometheus scrapes gcd\'s /metrics (test-double driver, real Redis)', function () {
  this.timeout(120_000);
  let g: GcdProcess;
  let prom: PrometheusProcess;

  before(async function () {
    const port = await freePort();
    g = new GcdProcess({
      GC_DRIVER: 'fake',
      GC_FAKE_HEADNODES: 'hn1:alice:physics,hn2:bob:chem',
      GC_SERVER_NAME: 'srv',
      GC_CAPACITY_NCPUS: '2',
      GC_KILL_DELAY_MS: '500',
      GC_LOCK_MS: '3000',
      GC_METRICS_ADDR: `127.0.0.1:${port}`,
    });
    await g.start();
    prom = new PrometheusProcess(`127.0.0.1:${port}`);
    await prom.start();
  });
  after(async function () {
    await prom?.stop();
    await g?.cleanup();
  });

  it('counts jobs by state, user and queue, capacity in use, and latencies as Prometheus queries them', async function () {
    // A 2-cpu host: two of alice's three 1-cpu jobs run, the third waits for capacity.
    for (let i = 0; i < 3; i++) {
      const r = g.tool('gcqsub', ['--headnode', 'hn1', '--', 'sleep', '187']);
      expect(r.status, r.stderr).to.equal(0);
    }
    const held = g.tool('gcqsub', ['--headnode', 'hn2', '-h', '--', 'true']);
    expect(held.status, held.stderr).to.equal(0);
    await until('two of alice\'s jobs running', () => (g.tool('gcqstat', []).stdout.match(/ R workq/g) ?? []).length === 2);
    // bob's job cannot start while alice's take both cpus: it waits (Q) like her third.
    const bobQ = g.tool('gcqsub', ['--headnode', 'hn2', '--', 'true']);
    expect(bobQ.status, bobQ.stderr).to.equal(0);

    await settle('copper_jobs by state and user', () => jobsByStateUser(prom), { 'H bob': 1, 'Q alice': 1, 'Q bob': 1, 'R alice': 2 });
    const q = await prom.query('copper_jobs{state="Q",queue="workq"}');
    expect(Object.fromEntries(q.map((s) => [s.metric.user, Number(s.value[1])]))).to.deep.equal({ alice: 1, bob: 1 });
    expect(await scalar(prom, 'copper_capacity_ncpus{state="used"}')).to.equal(2);
    expect(await scalar(prom, 'copper_capacity_ncpus{state="free"}')).to.equal(0);
    expect(await scalar(prom, 'copper_snapshot_pause_seconds_count')).to.equal(5);
    await settle('clone starts', () => scalar(prom, 'copper_clone_start_seconds_count'), 2);
    await settle('queue waits', () => scalar(prom, 'copper_job_queue_wait_seconds_count{queue="workq"}'), 2);
    expect(await scalar(prom, 'sum(copper_errors_total)')).to.equal(0);

    // Deleting one of alice's running jobs frees a cpu: bob's job goes first (fair share: he
    // has none running), ends at once, and then alice's waiting job starts.
    const del = g.tool('gcqdel', ['1']);
    expect(del.status, del.stderr).to.equal(0);
    await settle('after gcqdel', () => jobsByStateUser(prom), { 'F alice': 1, 'F bob': 1, 'H bob': 1, 'R alice': 2 });
    expect(await scalar(prom, 'copper_job_events_total{event="deleted"}')).to.equal(1);
    expect(await scalar(prom, 'copper_job_events_total{event="ended"}')).to.equal(1);
    // Observers hear of a start just after it: the last one may reach Prometheus a scrape later.
    await settle('queue waits', () => scalar(prom, 'copper_job_queue_wait_seconds_count{queue="workq"}'), 4);
    await settle('clone starts', () => scalar(prom, 'copper_clone_start_seconds_count'), 4);
    expect(await prom.targetHealth()).to.equal('up');
  });

  it('gcd refuses a malformed GC_METRICS_ADDR at start with one line naming it', async function () {
    const bad = new GcdProcess({ GC_DRIVER: 'fake', GC_METRICS_ADDR: 'localhost' });
    try {
      const err = await bad.start().then(() => undefined, (e: Error) => e.message);
      expect(err).to.match(/GC_METRICS_ADDR=localhost: not HOST:PORT/);
    } finally {
      await bad.cleanup();
    }
  });
});
