import type { Redis } from 'ioredis';
import type { CliAnswer, CliCall } from '../api/cli-call.js';
import type { CloneInfo } from '../clusters/types.js';
import type { HeadnodeInfo } from '../headnodes/types.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { Sampler, samplesKey } from './samples.js';
import { startWebDashboard } from './server.js';
import { loadWebSecret, WebTokens } from './token.js';
import { webTokenTool } from './token-tool.js';

export interface DashboardParts {
  stateDir: string;
  keyPrefix: string;
  /** GC_WEB_ADDR; undefined: no dashboard (tokens can still be minted). */
  addr: string | undefined;
  sampleSec: number;
  redis: Redis;
  scheduler: Scheduler;
  headnodes: () => Promise<HeadnodeInfo[]>;
  clones?: () => Promise<CloneInfo[]>;
}

/**
 * The dashboard's side of gcd: `gc web token` (always), and, with an address, the sampler and
 * the web server. gcd's composition root calls `tool` for `gc web ...` and `start` once the
 * scheduler runs.
 */
export class Dashboard {
  readonly tokens: WebTokens;
  private url: string | undefined;
  private closers: Array<() => Promise<void>> = [];

  constructor(private readonly p: DashboardParts) {
    this.tokens = new WebTokens(loadWebSecret(p.stateDir));
  }

  /** `gc web token ...` for a thin client (argv[0] is 'web'). */
  readonly tool = (req: CliCall): Promise<CliAnswer> => webTokenTool(this.tokens, () => this.url)(req);

  async start(): Promise<void> {
    const { addr, scheduler, redis } = this.p;
    if (!addr) return;
    const sampler = new Sampler(
      redis,
      samplesKey(this.p.keyPrefix),
      async () => {
        const live = await scheduler.store.list({ tasks: true });
        const used = scheduler.capacity.used;
        const lim = scheduler.capacity.limits;
        return {
          queued: live.filter((j) => !j.array && (j.state === 'Q' || j.state === 'H' || j.state === 'W')).length,
          running: live.filter((j) => !j.array && (j.state === 'R' || j.state === 'E')).length,
          ncpusUsed: used.ncpus,
          ncpusTotal: lim.ncpus,
          memMiBUsed: used.memMiB,
          memMiBTotal: lim.memMiB,
        };
      },
      this.p.sampleSec,
    );
    sampler.start();
    this.closers.push(() => sampler.close());
    const web = await startWebDashboard(addr, {
      tokens: this.tokens,
      jobs: () => scheduler.store.list({ tasks: false }),
      headnodes: this.p.headnodes,
      ...(this.p.clones ? { clones: this.p.clones } : {}),
      samples: () => sampler.read(),
      queue: scheduler.queue.queue,
    });
    this.url = web.url;
    this.closers.push(() => web.close());
  }

  async close(): Promise<void> {
    for (const c of this.closers.splice(0).reverse()) await c();
  }
}
