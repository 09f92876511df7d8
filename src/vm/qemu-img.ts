/** qemu-img calls: overlays and backing chains. Async (child processes), never blocking. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { DriverError } from '../errors.js';

const execFileP = promisify(execFile);

async function qemuImg(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP('qemu-img', args, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new DriverError(`qemu-img ${args[0] ?? ''} failed: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
}

/** A qcow2 overlay on `backing` (itself qcow2); `sizeBytes` grows the virtual disk. */
export async function createOverlay(path: string, backing: string, sizeBytes?: number): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', path];
  if (sizeBytes !== undefined) args.push(String(sizeBytes));
  await qemuImg(args);
}

/**
 * An overlay on a layer a running QEMU holds open read-write (`-u`: the backing is not opened;
 * the size is given). For QEMU to take over with blockdev-snapshot-sync mode=existing: QEMU,
 * running as the VM's uid, cannot make files in the VM's root-owned folder.
 */
export async function createOverlayUnsafe(path: string, backing: string, sizeBytes: number): Promise<void> {
  await qemuImg(['create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', 'qcow2', path, String(sizeBytes)]);
}

/** An empty qcow2 of `sizeBytes` (a disk that only has to exist, e.g. a RamReceiver's). */
export async function createBlank(path: string, sizeBytes: number): Promise<void> {
  await qemuImg(['create', '-q', '-f', 'qcow2', path, String(sizeBytes)]);
}

export interface ImageInfo {
  filename: string;
  format: string;
  virtualSize: number;
  backingFilename?: string;
}

/**
 * The image and its backing chain, top first. `-U` (force share) so it works on images a
 * running QEMU holds locked.
 */
export async function backingChain(path: string): Promise<ImageInfo[]> {
  const out = await qemuImg(['info', '-U', '--backing-chain', '--output=json', path]);
  const parsed = JSON.parse(out) as unknown;
  const list = Array.isArray(parsed) ? parsed : [parsed];
  return list.map((raw) => {
    const r = raw as Record<string, unknown>;
    const info: ImageInfo = {
      filename: String(r.filename),
      format: String(r.format),
      virtualSize: Number(r['virtual-size']),
    };
    const b = r['full-backing-filename'] ?? r['backing-filename'];
    if (typeof b === 'string') info.backingFilename = b;
    return info;
  });
}

export async function imageInfo(path: string): Promise<ImageInfo> {
  const out = await qemuImg(['info', '-U', '--output=json', path]);
  const r = JSON.parse(out) as Record<string, unknown>;
  return { filename: String(r.filename), format: String(r.format), virtualSize: Number(r['virtual-size']) };
}
