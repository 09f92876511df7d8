/**
 * The unprivileged uid each QEMU runs as (issue 13 item 7), like Firecracker's jailer gives each
 * microVM a uid of its own: a headnode, its snapshots and every clone of them share one uid
 * (they hold the same user's data anyway); two headnodes never share one. A guest that escapes
 * into its QEMU process can then open only its own VM's files: other headnodes' disks, snapshot
 * layers and RAM files are 0600 and owned by other uids, every folder above them is root's and
 * at most traversable (0711: no listing), and the host's own files (records, Redis password,
 * tokens) stay root's 0600 or sit in root's 0700 folders.
 *
 * uids come from GC_VM_UID_BASE .. +GC_VM_UID_COUNT and need no passwd entry. A headnode's is
 * chosen at create (record field `vmUid`) and travels with its snapshots (meta.json `vm.uid`),
 * so a clone on a grid node runs as the same uid without asking the server. A new headnode
 * takes a uid no headnode or snapshot of this state folder holds, from a random point of the
 * range: a reused name (a new incarnation) never inherits the files of the old one.
 *
 * gcd stays root: it makes every file QEMU must open after start (chown before the spawn).
 * When gcd does not run as root (development), nothing is chowned and QEMU runs as gcd's user.
 */
import { randomInt } from 'node:crypto';
import { statSync } from 'node:fs';
import { chmod, chown, mkdir, open, readFile, readdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { setting } from '../config/settings.js';
import { CopperError } from '../errors.js';

export class VmUidRangeFullError extends CopperError {
  override readonly code = 'EVMUIDS';
  constructor(
    readonly base: number,
    readonly count: number,
  ) {
    super(`no free VM uid: all ${count} uids from ${base} (GC_VM_UID_BASE, GC_VM_UID_COUNT) belong to headnodes or their snapshots`);
  }
}

/** True when gcd can give files away and run QEMU as another uid. */
export function vmUidsEnabled(): boolean {
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}

/** The configured range [base, base + count). */
export function vmUidRange(): { base: number; count: number } {
  const base = setting('vmUidBase');
  const count = setting('vmUidCount');
  // 2^32-1 is (uid_t)-1, "no change" to setresuid: never a real uid.
  if (base + count > 0xffff_fffe) throw new CopperError(`GC_VM_UID_BASE + GC_VM_UID_COUNT must stay below 4294967295 (got ${base} + ${count})`);
  return { base, count };
}

export function inVmUidRange(uid: number): boolean {
  const { base, count } = vmUidRange();
  return Number.isInteger(uid) && uid >= base && uid < base + count;
}

/** A uid of the range not in `taken`, from a random start (VmUidRangeFullError when none is left). */
export function pickVmUid(taken: ReadonlySet<number>): number {
  const { base, count } = vmUidRange();
  const start = randomInt(count);
  for (let i = 0; i < count; i++) {
    const uid = base + ((start + i) % count);
    if (!taken.has(uid)) return uid;
  }
  throw new VmUidRangeFullError(base, count);
}

/**
 * The uids held in a state folder: each headnode's (`headnodes/<name>/headnode.json` vmUid)
 * and each snapshot's (`snapshots/<id>/meta.json` vm.uid: a destroyed headnode's snapshots may
 * outlive it, and their files are still its uid's).
 */
export async function takenVmUids(stateDir: string): Promise<Set<number>> {
  const taken = new Set<number>();
  const scan = async (dir: string, file: string, pick: (j: unknown) => unknown): Promise<void> => {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      try {
        const uid = pick(JSON.parse(await readFile(join(dir, name, file), 'utf8')));
        if (typeof uid === 'number') taken.add(uid);
      } catch {
        // unfinished or unreadable: holds no uid
      }
    }
  };
  const field = (o: unknown, k: string): unknown => (o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined);
  await scan(join(stateDir, 'headnodes'), 'headnode.json', (j) => field(j, 'vmUid'));
  await scan(join(stateDir, 'snapshots'), 'meta.json', (j) => field(field(j, 'vm'), 'uid'));
  return taken;
}

/**
 * Give `path` (a file or folder QEMU opens after it started) to the VM's uid, mode 0600 for a
 * file and 0700 for a folder. No-op without a uid (gcd is not root, or a VM from before uids).
 */
export async function giveToVm(path: string, uid: number | undefined, mode?: number): Promise<void> {
  if (uid === undefined || !vmUidsEnabled()) return;
  await chown(path, uid, 0);
  await chmod(path, mode ?? (statSync(path).isDirectory() ? 0o700 : 0o600));
}

/** Make (if missing, empty) and give a file QEMU opens by path: a RAM file, a console log, a state file `cat` writes. */
export async function placeForVm(path: string, uid: number | undefined): Promise<void> {
  if (uid === undefined || !vmUidsEnabled()) return;
  const fh = await open(path, 'a', 0o600);
  await fh.close();
  await giveToVm(path, uid, 0o600);
}

/**
 * Root's folders on the way to VM files: traversable by every VM uid (to reach their own
 * files by name), listable and writable by root only.
 */
export async function traversable(...dirs: string[]): Promise<void> {
  if (!vmUidsEnabled()) return;
  for (const d of dirs) await chmod(d, 0o711);
}

/**
 * setpriv's options for a QEMU of `uid`: its uid and the guests' gid (the firewall's mark), no
 * supplementary group but, under KVM, /dev/kvm's group (Debian: root:kvm 0660).
 */
export function setprivIds(uid: number | undefined, kvm: boolean): string[] {
  const gid = String(setting('vmGid'));
  const ids = uid !== undefined && vmUidsEnabled() ? ['--reuid', String(uid), '--regid', gid] : ['--regid', gid];
  if (!kvm || uid === undefined || !vmUidsEnabled()) return [...ids, '--clear-groups'];
  let kvmGid: number | undefined;
  try {
    kvmGid = statSync('/dev/kvm').gid;
  } catch {
    kvmGid = undefined;
  }
  return kvmGid !== undefined && kvmGid !== 0 ? [...ids, '--groups', String(kvmGid)] : [...ids, '--clear-groups'];
}

/** Mode of root's folders that lead to VM files: 0711 when VMs run as uids of their own. */
export function vmDirMode(): 0o700 | 0o711 {
  return vmUidsEnabled() ? 0o711 : 0o700;
}

/**
 * The state folder's entries VM uids pass through (each 0711, root's); the grid cache is
 * cache-ownership.ts's; `clusters` holds the cluster clones' own state folder (`clusters/vm`);
 * `images` is the default GC_IMAGE_DIR, whose base images and kernels every headnode reads.
 */
const VM_ENTRIES = new Set(['headnodes', 'snapshots', 'clones', 'run', 'grid-cache', 'clusters', 'images']);

/**
 * Let every VM uid reach files of this state folder by name: the state folder and its VM
 * folders become 0711 (root's, not listable), and each ancestor gets o+x if it lacks it (a
 * state folder inside a 0700 temporary folder: tests). Nothing is made readable: every other
 * entry of the state folder (records, Redis, tokens, job output, the pid file) loses its
 * group and other bits, so a VM uid cannot open it by name either.
 */
export async function openStateDir(stateDir: string): Promise<void> {
  if (!vmUidsEnabled()) return;
  const abs = resolve(stateDir);
  for (let p = dirname(abs); p !== dirname(p); p = dirname(p)) {
    const st = await stat(p);
    if ((st.mode & 0o001) === 0) await chmod(p, (st.mode & 0o7777) | 0o001);
  }
  const inner = ['headnodes', 'snapshots', 'clones', 'run', 'run/h', 'run/c', 'run/t', 'run/channels', 'run/sftp'];
  await mkdir(abs, { recursive: true, mode: 0o711 });
  await chmod(abs, 0o711);
  for (const e of await readdir(abs, { withFileTypes: true })) {
    if (VM_ENTRIES.has(e.name) || e.isSymbolicLink()) continue;
    const p = join(abs, e.name);
    const st = await stat(p).catch(() => undefined);
    if (st && (st.mode & 0o077) !== 0) await chmod(p, st.mode & 0o7700).catch(() => undefined);
  }
  for (const d of inner) {
    await mkdir(join(abs, d), { recursive: true, mode: 0o711 });
    await chmod(join(abs, d), 0o711);
  }
}
