/**
 * A user-supplied disk image must be self-contained (issue 13 item 8). A qcow2 can name a
 * backing file or an external data file; QEMU (root on the host) opens those paths for the
 * guest, so a crafted image backed by /etc/shadow or a json:/nbd: filename would hand the
 * guest the host's files or sockets. Only a qcow2 with neither is accepted; the header is
 * read with the format fixed (-f qcow2: no probing, so a raw file cannot pass for a qcow2).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { UsageError } from '../errors.js';

const execFileP = promisify(execFile);

export class UntrustedImageError extends UsageError {
  constructor(
    readonly image: string,
    readonly reason: string,
  ) {
    super(`image ${image} is refused: ${reason}; give a self-contained qcow2 (qemu-img convert -O qcow2 ${image} new.qcow2)`);
  }
}

/** Throws UntrustedImageError unless `path` is a plain local qcow2 with no backing or data file. */
export async function assertSelfContainedImage(path: string): Promise<void> {
  // A path QEMU would read as a protocol (json:, nbd:, file:...) rather than a file name.
  if (!path.startsWith('/') || path.includes('\0')) throw new UntrustedImageError(path, 'not an absolute file path');
  let out: string;
  try {
    ({ stdout: out } = await execFileP('qemu-img', ['info', '-U', '-f', 'qcow2', '--output=json', path], { maxBuffer: 4 * 1024 * 1024 }));
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new UntrustedImageError(path, `not a readable qcow2 (${(e.stderr ?? e.message).trim().split('\n')[0]})`);
  }
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(out) as Record<string, unknown>;
  } catch {
    throw new UntrustedImageError(path, 'qemu-img info gave no JSON');
  }
  const backing = info['backing-filename'] ?? info['full-backing-filename'];
  if (typeof backing === 'string') throw new UntrustedImageError(path, `it has a backing file (${oneLine(backing)})`);
  const specific = info['format-specific'] as { data?: Record<string, unknown> } | undefined;
  const dataFile = specific?.data?.['data-file'];
  if (typeof dataFile === 'string') throw new UntrustedImageError(path, `it has an external data file (${oneLine(dataFile)})`);
  if (specific?.data?.['data-file-raw'] === true) throw new UntrustedImageError(path, 'it has an external raw data file');
}

function oneLine(s: string): string {
  const t = s.replace(/\s+/g, ' ');
  return t.length > 200 ? `${t.slice(0, 200)}...` : t;
}
