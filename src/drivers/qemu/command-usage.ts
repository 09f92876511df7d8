import type { CommandUsage } from '../driver.js';

/**
 * run-job's ID.usage line, `cpu_usec=N mem_peak=BYTES oom_kill=N`, from the job's cgroup.
 * Undefined when the file is missing or has no CPU figure (a guest without cgroup v2).
 */
export function parseCommandUsage(text: string | undefined): CommandUsage | undefined {
  if (!text) return undefined;
  const kv = new Map<string, string>();
  for (const tok of text.trim().split(/\s+/)) {
    const eq = tok.indexOf('=');
    if (eq > 0) kv.set(tok.slice(0, eq), tok.slice(eq + 1));
  }
  const num = (k: string): number | undefined => {
    const v = kv.get(k);
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
  };
  const usec = num('cpu_usec');
  if (usec === undefined) return undefined;
  const peak = num('mem_peak');
  return { cputSec: usec / 1e6, ...(peak !== undefined ? { memPeakKiB: Math.ceil(peak / 1024) } : {}), oomKills: num('oom_kill') ?? 0 };
}
