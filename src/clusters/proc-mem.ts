/** Host memory of a process, from /proc/<pid>/smaps_rollup (Linux >= 4.14). */
import { readFile } from 'node:fs/promises';

export interface ProcessMemory {
  /** Proportional set size: shared pages count divided by their sharers. */
  pssMiB: number;
  /** Pages only this process holds (Private_Clean + Private_Dirty). */
  privateMiB: number;
  rssMiB: number;
}

/** Undefined when the process is gone or the file is unreadable. */
export async function processMemory(pid: number): Promise<ProcessMemory | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    return undefined;
  }
  return parseSmapsRollup(text);
}

export function parseSmapsRollup(text: string): ProcessMemory {
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  };
  const mib = (k: number): number => Math.round((k / 1024) * 10) / 10;
  return { pssMiB: mib(kb('Pss')), privateMiB: mib(kb('Private_Clean') + kb('Private_Dirty')), rssMiB: mib(kb('Rss')) };
}
