import type { Redis } from 'ioredis';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';

/** One point of the dashboard's pictures: queue depth and capacity in use at time t. */
export interface Sample {
  /** ms since 1970. */
  t: number;
  queued: number;
  running: number;
  ncpusUsed: number;
  ncpusTotal: number;
  memMiBUsed: number;
  memMiBTotal: number;
}

/** Samples kept: a day at the default 10 s. */
export const MAX_SAMPLES = 8640;

export function samplesKey(prefix: string): string {
  return `${prefix}:web:samples`;
}

/**
 * Samples queue depth and utilisation every `everySec` into a bounded Redis list (newest
 * first, trimmed to MAX_SAMPLES), so the pictures survive a gcd restart and never grow.
 */
export class Sampler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly take: () => Promise<Omit<Sample, 't'>>,
    private readonly everySec: number,
  ) {}

  start(): void {
    const tick = (): void => {
      this.running = this.sampleNow().catch((e: unknown) => void log.warn('dashboard sample failed', { error: errorMessage(e) }));
    };
    tick();
    this.timer = setInterval(tick, this.everySec * 1000);
    this.timer.unref();
  }

  async sampleNow(): Promise<void> {
    const s: Sample = { t: Date.now(), ...(await this.take()) };
    await this.redis
      .multi()
      .lpush(this.key, JSON.stringify(s))
      .ltrim(this.key, 0, MAX_SAMPLES - 1)
      .exec();
  }

  /** Oldest first, at most `limit`. */
  async read(limit = MAX_SAMPLES): Promise<Sample[]> {
    const raw = await this.redis.lrange(this.key, 0, limit - 1);
    return raw.map((r) => JSON.parse(r) as Sample).reverse();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
