/**
 * A job's walltime clock: fires once `limitSec` of running time has passed. pause() stops it
 * (gcqsig -s suspend: PBS does not count suspended time), resume() re-arms it with the time
 * that was left.
 */
export class WalltimeClock {
  private timer: NodeJS.Timeout | undefined;
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
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  resume(): void {
    if (!this.timer && !this.done) this.arm();
  }

  clear(): void {
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    this.armedAt = Date.now();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.done = true;
      this.onExpire();
    }, this.leftMs);
  }
}
