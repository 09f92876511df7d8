/**
 * A job's walltime clock: fires once `limitSec` of running time has passed. pause() stops it
 * (gcqsig -s suspend: PBS does not count suspended time), resume() re-arms it with the time
 * that was left.
 */
import { setLongTimeout, type LongTimer } from './long-timer.js';
export class WalltimeClock {
  private timer: LongTimer | undefined;
  private leftMs: number;
  private armedAt = 0;
  private done = false;

  constructor(
    limitSec: number,
    private readonly onExpire: () => void,
  ) {
    this.leftMs = limitSec * 1000;
    this.arm();
  }

  /** Milliseconds of walltime left (while running: as of now). */
  get remainingMs(): number {
    return this.timer ? Math.max(0, this.leftMs - (Date.now() - this.armedAt)) : this.leftMs;
  }

  pause(): void {
    if (!this.timer) return;
    this.leftMs = this.remainingMs;
    this.timer.clear();
    this.timer = undefined;
  }

  resume(): void {
    if (!this.timer && !this.done) this.arm();
  }

  clear(): void {
    this.done = true;
    this.timer?.clear();
    this.timer = undefined;
  }

  private arm(): void {
    this.armedAt = Date.now();
    // A long timer: setTimeout fires at once past 24.8 days (2^31 ms), a walltime may be longer.
    this.timer = setLongTimeout(() => {
      this.timer = undefined;
      this.done = true;
      this.onExpire();
    }, this.leftMs);
  }
}
