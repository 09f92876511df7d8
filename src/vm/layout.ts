/**
 * Where every file of a headnode, a snapshot and a clone lives. Each VM or snapshot owns
 * exactly one folder on disk, one folder of sockets and (for RAM) one path on tmpfs, so
 * destroy and sweep delete by construction instead of by bookkeeping.
 *
 *   <stateDir>/headnodes/<name>/   headnode.json, disk-<gen>.qcow2 (active overlay and,
 *                                  until a block-stream finishes, the previous one), qemu.log,
 *                                  console.log, qemu.pid
 *   <stateDir>/snapshots/<id>/     meta.json, disk.qcow2 (frozen; a hard link of the headnode's
 *                                  former overlay), state.bin (device state)
 *   <stateDir>/clones/<id>/        clone.json, disk.qcow2 (overlay on the snapshot), qemu.log,
 *                                  qemu.pid, console.log
 *   <stateDir>/run/h/<name>/, run/c/<id>/   qmp.sock, qga.sock, console.sock
 *   <stateDir>/shared/<owner>/     the owner's shared volume (/shared in the headnode and clones)
 *   <ramDir>/headnodes/<name>.ram  the headnode's RAM (share=on: the file IS the RAM)
 *   <ramDir>/snapshots/<id>.ram    frozen RAM; clones map it MAP_PRIVATE (share=off)
 * A clone has no RAM file of its own: its private pages are anonymous copy-on-write memory.
 */
import { join } from 'node:path';
import type { Settings } from '../config/settings.js';
import { UsageError } from '../errors.js';

/** Names that become file names: no slashes, no dot-files, nothing a shell or QemuOpts treats specially. */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const MAX_SOCKET_PATH = 107;

export function assertId(kind: string, id: string): void {
  if (!ID_RE.test(id) || id.includes('..')) {
    throw new UsageError(`invalid ${kind} name '${id}': use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

export interface VmSockets {
  dir: string;
  qmp: string;
  qga: string;
  console: string;
}

export interface HeadnodePaths extends VmSockets {
  stateDir: string;
  record: string;
  ramFile: string;
  qemuLog: string;
  consoleLog: string;
  pidFile: string;
  /** The overlay of generation `gen` (a new one after each snapshot). */
  disk(gen: number): string;
}

export interface SnapshotPaths {
  dir: string;
  meta: string;
  disk: string;
  state: string;
  ramFile: string;
}

export interface ClonePaths extends VmSockets {
  stateDir: string;
  record: string;
  disk: string;
  qemuLog: string;
  consoleLog: string;
  pidFile: string;
}

export class Layout {
  constructor(private readonly settings: Pick<Settings, 'stateDir' | 'ramDir'>) {}

  get stateDir(): string {
    return this.settings.stateDir;
  }

  get headnodesDir(): string {
    return join(this.settings.stateDir, 'headnodes');
  }
  get snapshotsDir(): string {
    return join(this.settings.stateDir, 'snapshots');
  }
  get clonesDir(): string {
    return join(this.settings.stateDir, 'clones');
  }
  get runDir(): string {
    return join(this.settings.stateDir, 'run');
  }
  get sharedDir(): string {
    return join(this.settings.stateDir, 'shared');
  }
  /** An owner's shared volume (served to their VMs by a confined sftp-server). */
  shared(owner: string): string {
    // Account names (may start with '_'); never '.', '..' or a path.
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$/.test(owner) || owner.includes('..')) throw new UsageError(`invalid owner '${owner}'`);
    return join(this.sharedDir, owner);
  }
  get ramHeadnodesDir(): string {
    return join(this.settings.ramDir, 'headnodes');
  }
  get ramSnapshotsDir(): string {
    return join(this.settings.ramDir, 'snapshots');
  }

  headnode(name: string): HeadnodePaths {
    assertId('headnode', name);
    const dir = join(this.headnodesDir, name);
    return {
      stateDir: dir,
      record: join(dir, 'headnode.json'),
      ramFile: join(this.ramHeadnodesDir, `${name}.ram`),
      qemuLog: join(dir, 'qemu.log'),
      consoleLog: join(dir, 'console.log'),
      pidFile: join(dir, 'qemu.pid'),
      disk: (gen: number) => join(dir, `disk-${gen}.qcow2`),
      ...this.sockets(join(this.runDir, 'h', name)),
    };
  }

  snapshot(id: string): SnapshotPaths {
    assertId('snapshot', id);
    const dir = join(this.snapshotsDir, id);
    return {
      dir,
      meta: join(dir, 'meta.json'),
      disk: join(dir, 'disk.qcow2'),
      state: join(dir, 'state.bin'),
      ramFile: join(this.ramSnapshotsDir, `${id}.ram`),
    };
  }

  clone(id: string): ClonePaths {
    assertId('clone', id);
    const dir = join(this.clonesDir, id);
    return {
      stateDir: dir,
      record: join(dir, 'clone.json'),
      disk: join(dir, 'disk.qcow2'),
      qemuLog: join(dir, 'qemu.log'),
      consoleLog: join(dir, 'console.log'),
      pidFile: join(dir, 'qemu.pid'),
      ...this.sockets(join(this.runDir, 'c', id)),
    };
  }

  private sockets(dir: string): VmSockets {
    const s = { dir, qmp: join(dir, 'qmp.sock'), qga: join(dir, 'qga.sock'), console: join(dir, 'console.sock') };
    // sun_path holds 107 bytes: fail early with a clear message rather than inside QEMU.
    if (Buffer.byteLength(s.console) > MAX_SOCKET_PATH) {
      throw new UsageError(`state directory too deep for Unix sockets: '${s.console}' exceeds ${MAX_SOCKET_PATH} bytes`);
    }
    return s;
  }
}
