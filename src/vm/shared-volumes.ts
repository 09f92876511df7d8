/**
 * Users' shared volumes (`<state>/shared/<owner>`, /shared in their VMs): the folder, its byte
 * quota, and gcd's sftp gate that serves it (sftp-gate.ts).
 *
 * The quota (`shared_bytes` in quotas.yaml) is a filesystem of that size for the user: an ext4
 * image (`<state>/shared-images/<owner>.img`, sparse: it takes only what is written) loop-mounted
 * on the folder, nosuid,nodev,noexec. A guest that fills it gets ENOSPC from its own filesystem
 * and no one else's disk is touched. Chosen over project quotas (XFS prjquota, ext4 `quota`
 * feature), which need the state folder's filesystem made or mounted for them, and over a
 * tmpfs, which is RAM. The image grows when the quota grows (resize2fs, online); a smaller
 * quota does not shrink a volume that exists (ext4 cannot shrink online): gcd says so in its log.
 * A user without a quota keeps a plain folder on the state disk.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { QuotaConfig } from '../config/quota-types.js';
import { DriverError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { SftpGate } from './sftp-gate.js';

const run = promisify(execFile);
const MIB = 1024 * 1024;

/** A user's /shared size from the quotas: their own `shared_bytes`, else `defaults`; undefined: no quota. */
export function sharedQuotaMiB(config: QuotaConfig, owner: string): number | undefined {
  const mib = config.users.get(owner)?.sharedMiB ?? config.defaults.sharedMiB;
  return mib === undefined || mib === Infinity ? undefined : mib;
}

export interface SharedVolumesOptions {
  stateDir: string;
  /** Concurrent sftp sessions per owner (GC_SHARED_MAX_SESSIONS). */
  maxSessions: number;
  /** The owner's quota in MiB, undefined for none (sharedQuotaMiB over the current quotas). */
  quotaMiB?: (owner: string) => number | undefined;
}

export class SharedVolumes {
  readonly dir: string;
  readonly imagesDir: string;
  readonly gate: SftpGate;

  constructor(private readonly o: SharedVolumesOptions) {
    this.dir = join(o.stateDir, 'shared');
    this.imagesDir = join(o.stateDir, 'shared-images');
    this.gate = new SftpGate(this.dir, o.maxSessions);
  }

  /** The owner's folder, with its quota mounted and its gate listening: before a VM of theirs starts. */
  async prepare(owner: string, vmUid?: number): Promise<string> {
    const dir = join(this.dir, owner);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const mib = this.o.quotaMiB?.(owner);
    if (mib !== undefined) await this.withQuota(owner, dir, mib);
    await this.gate.serve(owner);
    if (vmUid !== undefined) await this.gate.serve(owner, vmUid);
    return dir;
  }

  /** At gcd start: serve every owner that has a volume (clones and re-attached headnodes use them). */
  async open(): Promise<void> {
    const owners = await readdir(this.dir, { withFileTypes: true }).catch(() => []);
    for (const d of owners) {
      if (!d.isDirectory()) continue;
      const img = join(this.imagesDir, `${d.name}.img`);
      // An image that is not mounted (after a host reboot) is mounted again before it is served.
      if (existsSync(img) && !isMountPoint(join(this.dir, d.name))) {
        await this.mount(img, join(this.dir, d.name)).catch((e: unknown) => log.warn(`shared volume of ${d.name}: ${errorMessage(e)}`));
      }
    }
    await this.gate.serveAll();
  }

  async close(): Promise<void> {
    await this.gate.closeAll();
  }

  private async withQuota(owner: string, dir: string, mib: number): Promise<void> {
    const img = join(this.imagesDir, `${owner}.img`);
    await mkdir(this.imagesDir, { recursive: true, mode: 0o700 });
    if (!existsSync(img)) await this.create(owner, img, dir, mib);
    else await this.grow(owner, img, dir, mib);
    if (!isMountPoint(dir)) await this.mount(img, dir);
  }

  /** A new volume; files already in the plain folder move into it (refused if they do not fit). */
  private async create(owner: string, img: string, dir: string, mib: number): Promise<void> {
    const tmp = `${img}.new`;
    await rm(tmp, { force: true });
    await run('truncate', ['-s', `${mib}M`, tmp]);
    // -m 0: sftp-server runs as root in its sandbox, root's reserve would be space over quota.
    await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-L', 'copper-shared', '-E', 'root_owner=0:0', tmp]);
    const staging = await mkdtemp(join(this.imagesDir, '.fill-'));
    try {
      await run('mount', ['-o', 'loop,nosuid,nodev,noexec', tmp, staging]);
      try {
        await rmdir(join(staging, 'lost+found')).catch(() => undefined);
        if ((await readdir(dir)).length > 0) {
          await run('cp', ['-a', '--', `${dir}/.`, `${staging}/`]).catch((e: unknown) => {
            throw new DriverError(`the files already in ${owner}'s /shared do not fit in shared_bytes=${mib}mb: ${errorMessage(e)}`);
          });
        }
        await run('chmod', ['0700', staging]);
      } finally {
        await run('umount', [staging]);
      }
      // The copy is complete: the plain folder's own files go, the volume takes their place.
      for (const name of await readdir(dir)) await rm(join(dir, name), { recursive: true, force: true });
      await run('mv', ['-f', '--', tmp, img]);
      log.info(`shared volume of ${owner}: ${mib} MiB (${img})`);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    } finally {
      await rmdir(staging).catch(() => undefined);
    }
  }

  private async grow(owner: string, img: string, dir: string, mib: number): Promise<void> {
    const have = (await stat(img)).size;
    if (have === mib * MIB && (isMountPoint(dir) || (await fsBytes(img)) >= have)) return;
    if (have > mib * MIB) {
      log.warn(`shared volume of ${owner} is ${Math.round(have / MIB)} MiB, above shared_bytes=${mib}mb: a volume is never shrunk`);
      return;
    }
    const dev = isMountPoint(dir) ? loopDeviceOf(dir) : undefined;
    try {
      await run('truncate', ['-s', `${mib}M`, img]);
      if (dev !== undefined) {
        // Online: needs CAP_SYS_RESOURCE (a container may lack it); else it grows at its next mount.
        await run('losetup', ['-c', dev]);
        await run('resize2fs', [dev]);
      } else {
        await run('e2fsck', ['-f', '-p', img]).catch(() => undefined);
        await run('resize2fs', [img]);
      }
      log.info(`shared volume of ${owner} grown to ${mib} MiB`);
    } catch (err) {
      log.warn(`shared volume of ${owner}: cannot grow it to ${mib} MiB now (${errorMessage(err).split('\n').at(-2) ?? ''}); it grows when next mounted`);
    }
  }

  private async mount(img: string, dir: string): Promise<void> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await run('mount', ['-o', 'loop,nosuid,nodev,noexec', img, dir]).catch((e: unknown) => {
      throw new DriverError(`cannot mount the shared volume ${img} on ${dir}: ${errorMessage(e)}`);
    });
  }
}

/** The size of the ext4 filesystem in an image (block count × block size), from its superblock. */
async function fsBytes(img: string): Promise<number> {
  const { stdout } = await run('dumpe2fs', ['-h', img]).catch(() => ({ stdout: '' }));
  const n = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(stdout)?.[1] ?? 0);
  return n('Block count') * n('Block size');
}

/** Unmount every shared volume of a state folder (tests, and an admin removing a state folder). */
export async function unmountSharedVolumes(stateDir: string): Promise<void> {
  const root = join(stateDir, 'shared') + '/';
  for (const m of mountPoints()) if (m.startsWith(root)) await run('umount', ['-l', m]).catch(() => undefined);
}

function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => unescapeMount(l.split(' ')[4] ?? ''))
    .filter((p) => p !== '');
}

export function isMountPoint(dir: string): boolean {
  return mountPoints().includes(dir);
}

/** The loop device mounted on dir (mountinfo's source field), for an online resize. */
function loopDeviceOf(dir: string): string | undefined {
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = l.split(' ');
    if (unescapeMount(f[4] ?? '') !== dir) continue;
    const src = f[f.indexOf('-') + 2];
    if (src?.startsWith('/dev/loop')) return src;
  }
  return undefined;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMount(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}
