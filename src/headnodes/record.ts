/**
 * The durable record of a headnode: `<stateDir>/headnodes/<name>/headnode.json`.
 * Written atomically (temp file + rename) so a crash never leaves half a record.
 */
import { readFile } from 'node:fs/promises';
import { DriverError, NotFoundError } from '../errors.js';
import { parseRecord } from '../json-record.js';
import { HEADNODE_RECORD } from './record.schema.js';
import type { Accel, HeadnodeSpec } from './types.js';

export interface BootFiles {
  /** The qcow2 the headnode's first overlay sits on. */
  base: string;
  kernel?: string;
  initrd?: string;
  /** The full kernel command line (a clone boots nothing, but must match the headnode's). */
  append?: string;
}

export interface HeadnodeRecord {
  version: 1;
  spec: HeadnodeSpec;
  createdAt: number;
  /** Which life of this name (headnodes/incarnation.ts); absent in records made before it. */
  incarnation?: string;
  boot: BootFiles;
  /** Generation of the active overlay disk-<gen>.qcow2; a snapshot moves the headnode to gen+1. */
  diskGen: number;
  /** What the administrator asked for last; a dead QEMU with want=running is a crash. */
  want: 'running' | 'stopped';
  /** Accelerator of the last start. */
  accel?: Accel;
  startedAt?: number;
  crash?: { reason: string; at: number };
  /** The headnode's SSH port on GC_SSH_ADDR (ssh-access.ts), kept for its life. */
  sshPort?: number;
  /** Its SSH host key line as the guest reported it (made on its first boot). */
  sshHostKey?: string;
  /** The uid its QEMU, its snapshots' receivers and its clones run as (vm/vm-uid.ts), kept for its life. */
  vmUid?: number;
}

export async function readRecord(path: string, name: string): Promise<HeadnodeRecord> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`no headnode named '${name}'`);
    throw new DriverError(`cannot read the record of headnode '${name}': ${(err as Error).message}`, { cause: err });
  }
  return parseRecord(path, 'headnode record', text, HEADNODE_RECORD);
}
