import type { Settings } from '../config/settings.js';
import { AccountingLog, AccountingReader } from '../accounting/accounting-log.js';
import { LifecycleBus } from '../lifecycle/listener.js';
import { log } from '../log.js';
import { JobMetrics } from '../metrics/job-metrics.js';
import { MetricsServer, parseMetricsAddr } from '../metrics/server.js';
import type { Scheduler } from '../scheduler/scheduler.js';

/** gcd's observers of jobs: the accounting log (on unless GC_ACCOUNTING_DIR=off) and the metrics. */
export interface Observers {
  lifecycle: LifecycleBus;
  /** What tools read (gctracejob, gcseff). */
  services: { accounting?: AccountingReader };
  /** Start GET /metrics on GC_METRICS_ADDR, if set. */
  serveMetrics(scheduler: Scheduler): Promise<void>;
  close(): Promise<void>;
}

export function startObservers(settings: Settings): Observers {
  const lifecycle = new LifecycleBus();
  // A wrong address must stop gcd at start, not later when Prometheus finds nothing.
  const addr = parseMetricsAddr(settings.metricsAddr);
  let accounting: AccountingLog | undefined;
  if (settings.accountingDir) {
    accounting = new AccountingLog(settings.accountingDir);
    lifecycle.add(accounting);
  }
  let server: MetricsServer | undefined;
  return {
    lifecycle,
    services: settings.accountingDir ? { accounting: new AccountingReader(settings.accountingDir) } : {},
    async serveMetrics(scheduler) {
      if (!addr) return;
      const metrics = new JobMetrics({
        jobs: () => scheduler.store.list({ tasks: true }),
        capacity: () => ({ limits: scheduler.capacity.limits, used: scheduler.capacity.used }),
      });
      lifecycle.add(metrics);
      server = new MetricsServer(() => metrics.text());
      const bound = await server.listen(addr);
      const host = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
      log.info('metrics listening', { addr: `${host}:${bound.port}`, path: '/metrics' });
    },
    async close() {
      await server?.close();
      await accounting?.flush();
    },
  };
}
