import type { Settings } from '../config/settings.js';
import { AccountingLog, AccountingReader } from '../accounting/accounting-log.js';
import { JobLifecycle } from '../lifecycle/from-job-events.js';
import { log } from '../log.js';
import { JobMetrics } from '../metrics/job-metrics.js';
import { MetricsServer, parseMetricsAddr } from '../metrics/server.js';
import type { Scheduler } from '../scheduler/scheduler.js';

/** gcd's observers of jobs: the accounting log (on unless GC_ACCOUNTING_DIR=off) and the metrics. */
export interface Observers {
  /** Passed to the Scheduler as `observe` (new records, clone start latency). */
  lifecycle: JobLifecycle;
  /** What commands read (gctracejob, gcseff). */
  services: { accounting?: AccountingReader };
  /** Listen to the scheduler's state changes (before it starts) and serve /metrics if GC_METRICS_ADDR. */
  attach(scheduler: Scheduler): void;
  serveMetrics(): Promise<void>;
  close(): Promise<void>;
}

export function startObservers(settings: Pick<Settings, 'metricsAddr' | 'accountingDir'>): Observers {
  const lifecycle = new JobLifecycle();
  // A wrong address must stop gcd at start, not later when Prometheus finds nothing.
  const addr = parseMetricsAddr(settings.metricsAddr);
  const dir = settings.accountingDir === 'off' ? undefined : settings.accountingDir;
  let accounting: AccountingLog | undefined;
  if (dir) {
    accounting = new AccountingLog(dir);
    lifecycle.add(accounting);
  }
  let metrics: JobMetrics | undefined;
  let server: MetricsServer | undefined;
  return {
    lifecycle,
    services: dir ? { accounting: new AccountingReader(dir) } : {},
    attach(scheduler) {
      lifecycle.attach(scheduler.events);
      if (!addr) return;
      const m = new JobMetrics({
        jobs: () => scheduler.store.list({ tasks: true }),
        capacity: () => ({ limits: scheduler.capacity.limits, used: scheduler.capacity.used }),
      });
      lifecycle.add(m);
      lifecycle.onCloneStart((ms) => m.observeCloneStart(ms));
      metrics = m;
    },
    async serveMetrics() {
      if (!addr || !metrics) return;
      const m = metrics;
      server = new MetricsServer(() => m.text());
      const bound = await server.listen(addr);
      const host = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
      log.info('metrics listening', { addr: `${host}:${bound.port}`, path: '/metrics' });
    },
    async close() {
      await server?.close();
      await lifecycle.close();
      await accounting?.flush();
    },
  };
}
