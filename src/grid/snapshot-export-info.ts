/**
 * The record that tells a compute host where a snapshot's files are exported over NBD: written
 * by the server (snapshot-export.ts) into Redis as `<prefix>:snapexport:<snapshotId>`, read by
 * the node (snapshot-cache.ts). It holds no secret: the NBD server refuses every client without
 * its node's TLS pre-shared key.
 */
import { createHmac } from 'node:crypto';
import type { SnapshotMeta } from '../vm/snapshots/types.js';
import { UsageError } from '../errors.js';

/** One file exported read-only as raw bytes. */
export interface ExportedFile {
  /**
   * Names the file's content: the same key on two snapshots is the same immutable file (the
   * image's base layer, the kernel), so a node fetches it once for all of them.
   */
  key: string;
  /** NBD export name. */
  export: string;
  /** Exact length: NBD rounds a raw export up to 512 bytes. */
  bytes: number;
  /** Bytes holding data on the server (sparse files: what the copy will take), when known. */
  allocated?: number;
}

/** A disk layer: its bytes as a file, and the format of those bytes. */
export interface ExportedLayer extends ExportedFile {
  format: 'qcow2' | 'raw';
}

export interface SnapshotExportInfo {
  version: 1;
  snapshotId: string;
  /** The NBD server (GC_NBD_ADDR). */
  host: string;
  port: number;
  meta: SnapshotMeta;
  ram: ExportedFile;
  state: ExportedFile;
  /** The disk's backing chain, top (the snapshot's own frozen layer) first. */
  disk: ExportedLayer[];
  kernel?: ExportedFile;
  initrd?: ExportedFile;
}

/** Redis key of a snapshot's export record (a hash: `info` JSON, `at` ms). */
export function snapExportKey(prefix: string, snapshotId: string): string {
  return `${prefix}:snapexport:${snapshotId}`;
}

/** Pub/sub channel on which a node asks the server to export a snapshot (message: its id). */
export function snapExportWantChannel(prefix: string): string {
  return `${prefix}:snapexport:want`;
}

/**
 * A node's NBD pre-shared key, derived from its node token (the secret it talks to the server
 * with) so that no second secret has to be handed out: the server, which knows every node's
 * token, derives each key; a node knows only its own. 32 bytes, hex, as keys.psk wants.
 */
export function nbdPskOf(nodeToken: string): string {
  if (nodeToken.length < 16) throw new UsageError('a node token must be at least 16 characters');
  return createHmac('sha256', nodeToken).update('copper nbd psk v1').digest('hex');
}

/** A PSK identity (QEMU tls-creds-psk username): the node's name, nothing keys.psk would misread. */
export function assertPskIdentity(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name)) throw new UsageError(`invalid node name '${name}' for an NBD key`);
}

export function assertPskHex(key: string): void {
  if (!/^[0-9a-f]{32,128}$/.test(key) || key.length % 2 !== 0) throw new UsageError('an NBD key must be 16-64 bytes of lowercase hex');
}

/** Host and port of GC_NBD_ADDR (`HOST:PORT`, `[v6]:PORT`). */
export function parseNbdAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) throw new UsageError(`GC_NBD_ADDR must be HOST:PORT, got '${addr}'`);
  return { host: m[1] ?? m[2] ?? '', port };
}
