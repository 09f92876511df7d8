/**
 * setTimeout for any delay. Node's timers hold at most 2^31-1 ms (24.8 days): a longer delay
 * is taken as 1 ms, so a walltime of 30 days would kill its job at once. This chains timers
 * of at most MAX_TIMER_MS, checking the wall clock at each step.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

export function setLongTimeout(fn: () => void, delayMs: number, now: () => number = Date.now): LongTimer {
  const due = now() + Math.max(0, delayMs);
  let t: NodeJS.Timeout | undefined;
  const arm = (): void => {
    const left = due - now();
    if (left <= 0) {
      t = undefined;
      fn();
      return;
    }
    t = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
  };
  // Never synchronously, even for 0: the caller's setup runs first, as with setTimeout.
  t = setTimeout(arm, Math.min(Math.max(0, delayMs), MAX_TIMER_MS));
  return {
    clear(): void {
      if (t) clearTimeout(t);
      t = undefined;
    },
  };
}
