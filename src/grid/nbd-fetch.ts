/**
 * Node side of an NBD export: copy it into a local file with `qemu-img convert` (qemu-utils,
 * already a dependency), over TLS with this node's pre-shared key, sparse: NBD block status
 * lets it skip holes and -S 4k leaves zero pages unwritten, so a RAM file costs the guest's
 * touched pages on the wire and in tmpfs.
 */
import { execFile } from 'node:child_process';
import { mkdir, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DriverError } from '../errors.js';
import { assertPskHex, assertPskIdentity } from './snapshot-export-info.js';

const execFileP = promisify(execFile);

/** An export could not be read: server down, key refused, export gone. */
export class NbdFetchError extends DriverError {
  constructor(
    readonly host: string,
    readonly port: number,
    readonly exportName: string,
    readonly detail: string,
  ) {
    super(`NBD ${host}:${port} export ${exportName}: ${detail}`);
  }
}

/** This node's client credentials: a folder holding keys.psk with its one `name:key` line. */
export class NbdClientKey {
  private constructor(
    readonly identity: string,
    readonly dir: string,
  ) {}

  static async write(dir: string, identity: string, pskHex: string): Promise<NbdClientKey> {
    assertPskIdentity(identity);
    assertPskHex(pskHex);
    if (dir.includes(',')) throw new DriverError(`NBD key folder '${dir}': a comma is not supported`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, 'keys.psk'), `${identity}:${pskHex}\n`, { mode: 0o600 });
    return new NbdClientKey(identity, dir);
  }
}

export interface NbdSource {
  host: string;
  port: number;
  exportName: string;
  /** The file's exact length (the export is rounded up to 512 bytes). */
  bytes: number;
}

/** Copy an export into `to` (created or overwritten); returns the bytes allocated in `to`. */
export async function fetchExport(src: NbdSource, key: NbdClientKey, to: string): Promise<number> {
  const opts = [
    'driver=raw',
    'file.driver=nbd',
    'file.server.type=inet',
    `file.server.host=${src.host}`,
    `file.server.port=${src.port}`,
    `file.export=${src.exportName}`,
    'file.tls-creds=tls0',
  ].join(',');
  const args = [
    'convert',
    '--object',
    `tls-creds-psk,id=tls0,endpoint=client,dir=${key.dir},username=${key.identity}`,
    '--image-opts',
    opts,
    '-O',
    'raw',
    '-S',
    '4k',
    to,
  ];
  try {
    await execFileP('qemu-img', args, { maxBuffer: 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const detail = (e.stderr ?? e.message).trim().split('\n')[0] ?? 'failed';
    throw new NbdFetchError(src.host, src.port, src.exportName, detail.replace(/^qemu-img: /, ''));
  }
  await truncate(to, src.bytes);
  const st = await stat(to);
  return st.blocks * 512;
}
