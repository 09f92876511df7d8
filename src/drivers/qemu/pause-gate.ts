/**
 * Keeps guest-agent calls off a paused clone: a paused VM answers nothing, so a poll sent
 * after QMP `stop` would hang until `cont` (or time out and fail the job). Callers enter()
 * before each agent call (refused while paused) and leave() after; pause waits until no call
 * is in flight. enter() is synchronous, so no call can slip in between the check and the stop.
 */
export class PauseGate {
  private paused = false;
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];

  get isPaused(): boolean {
    return this.paused;
  }

  /** False while paused: the caller waits and tries again. */
  enter(): boolean {
    if (this.paused) return false;
    this.inFlight++;
    return true;
  }

  leave(): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Refuse new calls, then resolve once the ones in flight have ended. */
  async close(): Promise<void> {
    this.paused = true;
    if (this.inFlight === 0) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  open(): void {
    this.paused = false;
  }
}
