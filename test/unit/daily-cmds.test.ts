import { expect } from 'chai';
import { parseQuotaText } from '../../src/config/quotas.js';
import { parseSignal } from '../../src/drivers/signals.js';
import { neverRunsVerdict } from '../../src/scheduler/never-runs.js';
import { WalltimeClock } from '../../src/scheduler/walltime-clock.js';
import { testRecord } from '../helpers/jobs.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('daily commands: walltime clock, signals, never-runs verdict', function () {
  it('the walltime clock does not run while paused and fires with the time that was left', async function () {
    let fired = 0;
    const t0 = Date.now();
    const c = new WalltimeClock(0.3, () => (fired = Date.now() - t0));
    await sleep(150);
    c.pause();
    const left = c.remainingMs;
    expect(left).to.be.within(100, 200);
    await sleep(400); // longer than the whole limit
    expect(fired).to.equal(0, 'paused: never fires');
    expect(c.remainingMs).to.equal(left);
    c.resume();
    await sleep(300);
    expect(fired).to.be.within(650, 850, 'fired ~limit + pause after the start');
    c.clear();
  });

  it('a cleared clock never fires, even when resumed', async function () {
    let fired = false;
    const c = new WalltimeClock(0.05, () => (fired = true));
    c.pause();
    c.clear();
    c.resume();
    await sleep(120);
    expect(fired).to.equal(false);
  });

  it('signals by name, SIG name or number; anything else is a usage error', function () {
    expect(['TERM', 'SIGUSR1', 'sighup', '9', ' 15 '].map(parseSignal)).to.deep.equal(['TERM', 'USR1', 'HUP', 'KILL', 'TERM']);
    expect(() => parseSignal('SIGNOPE')).to.throw(/-s SIGNOPE: not a signal/);
    expect(() => parseSignal('99')).to.throw(/not a signal/);
  });

  it('says when a waiting job can never run, and what would change that', function () {
    const cfg = parseQuotaText('queues:\n  workq: {}\n  closed:\n    max_running: 0\n  narrow:\n    max_running_ncpus: 2\ndefault_queue: workq\n', 'quotas.yaml');
    const cap = { ncpus: 8, memMiB: 4096 };
    const job = (queue: string, ncpus: number, memMiB = 512, state: 'Q' | 'H' | 'R' = 'Q') => {
      const r = testRecord(1, state);
      return { ...r, spec: { ...r.spec, queue, resources: { ncpus, memMiB } } };
    };
    expect(neverRunsVerdict(job('workq', 64), cap, cfg)).to.equal(
      'can never run: asks ncpus=64, the largest host has 8; lower -l ncpus to 8 or less (gcqdel it and gcqsub again), or the admin raises GC_CAPACITY_NCPUS',
    );
    expect(neverRunsVerdict(job('workq', 1, 8192), cap, cfg)).to.match(/^can never run: needs mem=8gb, the largest host gives 4gb; /);
    expect(neverRunsVerdict(job('closed', 1), cap, cfg)).to.match(/^can never run: QueueMaxRun: .*max_running=0; the admin raises max_running, or gcqmove it to another queue$/);
    expect(neverRunsVerdict(job('narrow', 4), cap, cfg)).to.match(/^can never run: QueueMaxCpus: .*; lower -l ncpus/);
    expect(neverRunsVerdict(job('narrow', 2), cap, cfg)).to.equal(undefined, 'fits once others end');
    expect(neverRunsVerdict(job('workq', 8), cap, cfg)).to.equal(undefined);
    expect(neverRunsVerdict(job('workq', 64, 512, 'R'), cap, cfg)).to.equal(undefined, 'only waiting jobs are judged');
  });
});
