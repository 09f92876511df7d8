/**
 * A long-lived VM's overlay generations (<dir>/disk-<gen>.qcow2, layout.ts): a snapshot
 * switches the VM onto a new one, a block-stream later makes the old one unused.
 */
import { readdir, rm } from 'node:fs/promises';
import { basename } from 'node:path';
import { log } from '../log.js';
import type { HeadnodePaths } from './layout.js';
import { backingChain } from './qemu-img.js';

/**
 * Delete overlay generations the active disk no longer depends on (left when a block-stream
 * finished while gcd was down, or a snapshot failed half-way).
 */
export async function pruneGenerations(paths: HeadnodePaths, activeGen: number): Promise<void> {
  const active = paths.disk(activeGen);
  const chain = new Set((await backingChain(active)).map((i) => i.filename));
  for (const f of await readdir(paths.stateDir)) {
    const full = `${paths.stateDir}/${f}`;
    if (/^disk-\d+\.qcow2$/.test(f) && full !== active && !chain.has(full)) {
      await rm(full, { force: true });
      log.info(`headnode ${basename(paths.stateDir)}: removed unused overlay ${f}`);
    }
  }
}

/**
 * The newest overlay generation on disk. Generations only grow, and a file newer than the
 * record exists only if gcd died around blockdev-snapshot-sync: either QEMU switched to it
 * (it holds the newest writes) or it is an unused empty overlay of the recorded one (adopting
 * it loses nothing). Only qcow2 overlays whose whole chain opens are candidates.
 */
export async function latestGeneration(paths: HeadnodePaths, recorded: number): Promise<number> {
  let best = recorded;
  for (const f of await readdir(paths.stateDir)) {
    const m = /^disk-(\d+)\.qcow2$/.exec(f);
    if (!m || Number(m[1]) <= best) continue;
    try {
      const chain = await backingChain(paths.disk(Number(m[1])));
      if (chain.length >= 2 && chain.every((c) => c.format === 'qcow2' || c === chain[chain.length - 1])) best = Number(m[1]);
    } catch {
      // unreadable: not a candidate
    }
  }
  return best;
}
