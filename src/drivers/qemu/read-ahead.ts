/**
 * Reading a guest file through its agent ahead of the consumer: the clone's archive is read
 * while the headnode starts place.py (seconds under TCG), not only once it asks for it.
 * At most `ahead` bytes wait on the host; exactly `size` bytes are read, never more.
 */
import type { AgentClient } from '../../vm/agent.js';
import { StageOutError } from './stage-out-common.js';

export class ReadAhead {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private read = 0;
  private stopped = false;
  private failed: Error | undefined;
  private waiters: Array<() => void> = [];
  /** Settles when reading stopped (done, failed or stopped): then the handle may be closed. */
  readonly finished: Promise<void>;

  constructor(
    private readonly agent: AgentClient,
    private readonly handle: number,
    private readonly size: number,
    private readonly chunk: number,
    private readonly ahead: number,
  ) {
    this.finished = this.run().catch((err: unknown) => {
      this.failed = err instanceof Error ? err : new StageOutError(String(err));
      this.notify();
    });
  }

  /** The next piece, or undefined at the end (after exactly `size` bytes). */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const c = this.chunks.shift();
      if (c) {
        this.buffered -= c.length;
        this.notify();
        return c;
      }
      if (this.failed) throw this.failed;
      if (this.read >= this.size || this.stopped) return undefined;
      await this.wait();
    }
  }

  stop(): void {
    this.stopped = true;
    this.notify();
  }

  private async run(): Promise<void> {
    while (this.read < this.size && !this.stopped) {
      while (this.buffered >= this.ahead && !this.stopped) await this.wait();
      if (this.stopped) break;
      const want = Math.min(this.chunk, this.size - this.read);
      const { data, eof } = await this.agent.fileRead(this.handle, want);
      const part = data.length > want ? data.subarray(0, want) : data;
      if (part.length) {
        this.read += part.length;
        this.buffered += part.length;
        this.chunks.push(part);
        this.notify();
      }
      if (this.read < this.size && (eof || data.length === 0)) throw new StageOutError(`the clone's archive ended after ${this.read} of ${this.size} bytes`);
    }
    this.notify();
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
