import { readFile } from 'node:fs/promises';
/** What a VM process used, seen from the host (the job driver's CloneUsage has this shape). */
export interface ProcessUsage {
  cputSec: number;
  /** Peak resident memory (VmHWM). */
  memKiB: number;
}

const TICKS_PER_SEC = 100; // Linux USER_HZ on every distribution Copper targets

/** utime+stime (fields 14, 15 of /proc/<pid>/stat) and VmHWM of a process; undefined if it is gone. */
export async function processUsage(pid: number): Promise<ProcessUsage | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(rest[11]) + Number(rest[12]);
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return { cputSec: ticks / TICKS_PER_SEC, memKiB: hwm ? Number(hwm[1]) : 0 };
  } catch {
    return undefined;
  }
}
