/**
 * The headnode's qcow2 chain over QMP. A snapshot freezes the active overlay and moves the
 * headnode onto a new one; a background block-stream then copies the frozen layer's data up
 * into the new overlay, so the chain is back to [active, base] and a frozen layer belongs to
 * its snapshot alone (deletable on release).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DriverError } from '../errors.js';
import type { QmpClient } from './qmp.js';
import { DISK_DEVICE_ID } from './vm-args.js';

interface BlockInfo {
  qdev?: string;
  device?: string;
  inserted?: { 'node-name': string; file: string; image?: { filename: string; 'virtual-size'?: number; 'backing-filename'?: string } };
}

interface NamedNode {
  'node-name': string;
  drv: string;
  file: string;
  backing_file?: string;
}

interface BlockJob {
  device: string;
  type: string;
  offset: number;
  len: number;
}

/** The node the guest disk currently writes to, and its file. */
export async function activeNode(qmp: QmpClient): Promise<{ node: string; file: string }> {
  const blocks = await qmp.execute<BlockInfo[]>('query-block');
  const disk = blocks.find((b) => (b.qdev ?? '').includes(`/${DISK_DEVICE_ID}/`) || b.qdev === DISK_DEVICE_ID);
  if (!disk?.inserted) throw new DriverError(`no block device ${DISK_DEVICE_ID} in this VM`);
  return { node: disk.inserted['node-name'], file: disk.inserted.file };
}

/** The guest-visible size of the disk whose top node is `node`, in bytes. */
export async function virtualSize(qmp: QmpClient, node: string): Promise<number> {
  const blocks = await qmp.execute<BlockInfo[]>('query-block');
  const size = blocks.find((b) => b.inserted?.['node-name'] === node)?.inserted?.image?.['virtual-size'];
  if (size === undefined) throw new DriverError(`no size for block node ${node}`);
  return size;
}

/** The format (qcow2) node opened on `filename`. */
export async function nodeForFile(qmp: QmpClient, filename: string): Promise<string> {
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
  const n = nodes.find((x) => x.drv === 'qcow2' && x.file === filename);
  if (!n) throw new DriverError(`no qcow2 block node for ${filename}`);
  return n['node-name'];
}

/** The backing file the node on `filename` currently points at (undefined: none). */
export async function backingOf(qmp: QmpClient, filename: string): Promise<string | undefined> {
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
  return nodes.find((x) => x.drv === 'qcow2' && x.file === filename)?.backing_file;
}

/** Is a block job with this id still there? */
export async function jobRunning(qmp: QmpClient, jobId: string): Promise<boolean> {
  const jobs = await qmp.execute<BlockJob[]>('query-block-jobs');
  return jobs.some((j) => j.device === jobId);
}

/**
 * Stream the layers from `bottom` up to (not including) `top` into `top`, then wait until
 * the job is gone. The guest runs on meanwhile. Resolves when the job ended; the caller
 * checks the chain to know whether it succeeded (a failed job also just disappears).
 */
export async function streamDown(qmp: QmpClient, top: string, bottom: string, jobId: string, pollMs = 200): Promise<void> {
  await qmp.execute('block-stream', { 'job-id': jobId, device: top, bottom });
  while (await jobRunning(qmp, jobId)) await sleep(pollMs);
}
