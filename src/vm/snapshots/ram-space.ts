/** Room for a snapshot's RAM, and giving back the pages of it that are all zeros. */
import { spawn } from 'node:child_process';
import { stat, statfs } from 'node:fs/promises';
import { DriverError } from '../../errors.js';
import { log } from '../../log.js';
import type { RunningVm } from './types.js';

const MiB = 1024 * 1024;

/**
 * Before pausing anything: is there room on the RAM folder's filesystem for the snapshot's
 * RAM (at most the VM's RAM size)? A full tmpfs found mid-snapshot would kill the receiver
 * with SIGBUS; this says what is missing instead.
 */
export async function checkRamSpace(h: RunningVm, ramSnapshotsDir: string, background: boolean): Promise<void> {
  const fs = await statfs(ramSnapshotsDir);
  const free = fs.bavail * fs.bsize;
  const ram = h.config.memMiB * MiB;
  const st = await stat(h.paths.ramFile).catch(() => undefined);
  const allocated = st ? Math.min(st.blocks * 512, ram) : ram;
  // Copy: the VM's pages in use. Background: the receiver fills a whole RAM file before holes
  // are punched back, and QEMU first faults in the VM's own file (on the same tmpfs, where
  // running out would kill the VM, not just the snapshot).
  const need = background ? ram + (ram - allocated) : allocated;
  if (free < need) {
    throw new DriverError(
      `No space left for the snapshot's RAM in ${ramSnapshotsDir}: ${Math.ceil(need / MiB)} MiB needed, ${Math.floor(free / MiB)} MiB free`,
    );
  }
}

/**
 * Punch holes where a snapshot RAM file is all zeros (a receiver writes every page, zero or
 * not). Safe while clones map it: the contents do not change. Never fails: a failure only
 * costs memory.
 */
export function digHoles(file: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const child = spawn('fallocate', ['--dig-holes', '--', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => {
      log.warn(`fallocate --dig-holes ${file}: ${e.message}`);
      resolve();
    });
    child.on('close', (code) => {
      if (code !== 0 && !/No such file/.test(err)) log.warn(`fallocate --dig-holes ${file}: ${err.trim() || `status ${code}`}`);
      resolve();
    });
  });
}

/** cp --sparse=always: on tmpfs only the guest's touched pages are copied. */
export function copySparse(from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('cp', ['--sparse=always', '--', from, to], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new DriverError(`copying guest RAM failed: ${err.trim() || `cp status ${code}`}`))));
  });
}
