/**
 * One cgroup per VM, with memory, CPU and pids limits, removed when the VM ends.
 *
 * QEMU enters its cgroup before it starts (vm-process.ts runs it through a small `sh` that
 * writes its own pid to each `cgroup.procs`, then execs), so no thread of QEMU ever runs
 * outside it and the helpers QEMU spawns (guestfwd's socat, migration's `cat`) count too.
 *
 * Where: cgroup v2 (the unified hierarchy, Debian 12's default) at
 * `/sys/fs/cgroup/copper.slice/<state>/<vm>`: at the top, because v2 allows controllers only
 * in cgroups without processes of their own (gcd's service cgroup has gcd in it). On a host
 * still on cgroup v1 (a hybrid layout: memory, cpu and pids each a hierarchy of its own) the
 * same folders go under gcd's own cgroup in each hierarchy, so a container's accounting keeps
 * counting its VMs. `<state>` is a hash of the state folder: two gcds on one host (tests) never
 * share a folder, and a gcd's restart sweeps only its own leftovers.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { setting } from '../config/settings.js';
import { DriverError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { VmConfig } from './vm-args.js';

export interface VmLimits {
  /** memory.max (v1: memory.limit_in_bytes). */
  memBytes: number;
  /** CPUs the VM may use at once: cpu.max quota = cpus × period. */
  cpus: number;
  /** pids.max. */
  pids: number;
}

/** The folders of one VM's cgroup: one (v2) or one per controller hierarchy (v1). */
export interface VmCgroup {
  vmId: string;
  /** Each folder's `cgroup.procs`, for the process to join before exec. */
  procsFiles: string[];
  dirs: string[];
}

const CPU_PERIOD_US = 100_000;
const ROOT = '/sys/fs/cgroup';
const SLICE = 'copper.slice';

/** v1: per controller, gcd's own cgroup folder (where Copper's go) and the hierarchy's mount. */
type Layout =
  | { kind: 'v2'; root: string }
  | { kind: 'v1'; memory: string; cpu: string; pids: string; mounts: Record<'memory' | 'cpu' | 'pids', string>; unified: string | undefined };

let detected: Layout | null | undefined;

/** The host's cgroup layout, or null when the controllers Copper needs are not writable. */
export function cgroupLayout(): Layout | null {
  if (detected !== undefined) return detected;
  detected = detect();
  return detected;
}

function detect(): Layout | null {
  if (existsSync(join(ROOT, 'cgroup.controllers'))) {
    const have = readFileSync(join(ROOT, 'cgroup.controllers'), 'utf8').split(/\s+/);
    return ['memory', 'cpu', 'pids'].every((c) => have.includes(c)) ? { kind: 'v2', root: ROOT } : null;
  }
  // v1: each controller's mount point and gcd's own cgroup in it.
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const own = new Map<string, string>();
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, ctrls, path] = line.split(':');
    if (ctrls && path !== undefined) for (const c of ctrls.split(',')) own.set(c, path);
  }
  const mountOf: Record<string, string> = {};
  const place = (ctrl: string): string | undefined => {
    for (const m of mounts) {
      const f = m.split(' ');
      const sep = f.indexOf('-');
      if (sep < 0 || f[sep + 1] !== 'cgroup') continue;
      if (!(f[sep + 3] ?? '').split(',').includes(ctrl)) continue;
      // The mount's root inside the hierarchy (f[3]) is usually '/'; gcd's path is relative to the hierarchy.
      const rootInHier = f[3] ?? '/';
      const mine = own.get(ctrl) ?? '/';
      const rel = mine.startsWith(rootInHier) ? mine.slice(rootInHier.length) : '';
      mountOf[ctrl] = f[4] ?? '';
      return join(f[4] ?? '', rel);
    }
    return undefined;
  };
  const memory = place('memory');
  const cpu = place('cpu');
  const pids = place('pids');
  if (!memory || !cpu || !pids) return null;
  // The hybrid layout's cgroup2 mount (no controllers): VMs join it too, for the egress filter.
  const unified = mounts.map((m) => m.split(' ')).find((f) => f[f.indexOf('-') + 1] === 'cgroup2')?.[4];
  return { kind: 'v1', memory, cpu, pids, mounts: { memory: mountOf.memory ?? '', cpu: mountOf.cpu ?? '', pids: mountOf.pids ?? '' }, unified };
}

/** `copper.slice/<state>`: this gcd's share of the slice. */
function stateFolder(stateDir: string): string {
  return join(SLICE, 's' + createHash('sha256').update(stateDir).digest('hex').slice(0, 12));
}

function parents(stateDir: string, layout: Layout): { dir: string; ctrl: 'all' | 'memory' | 'cpu' | 'pids' | 'none' }[] {
  const rel = stateFolder(stateDir);
  if (layout.kind === 'v2') return [{ dir: join(layout.root, rel), ctrl: 'all' }];
  return [
    { dir: join(layout.memory, rel), ctrl: 'memory' },
    { dir: join(layout.cpu, rel), ctrl: 'cpu' },
    { dir: join(layout.pids, rel), ctrl: 'pids' },
    ...(layout.unified !== undefined ? [{ dir: join(layout.unified, rel), ctrl: 'none' as const }] : []),
  ];
}

/**
 * copper.slice in the cgroup v2 hierarchy, made if missing, as nftables names it (relative to
 * /sys/fs/cgroup): every Copper QEMU's sockets belong to it (guest-egress.ts). Undefined when
 * there is no cgroup v2 hierarchy under /sys/fs/cgroup.
 */
export async function qemuSliceForNft(): Promise<string | undefined> {
  const layout = cgroupLayout();
  const v2 = layout?.kind === 'v2' ? layout.root : layout?.unified;
  if (v2 === undefined || !(v2 + '/').startsWith(ROOT + '/')) return undefined;
  await mkdir(join(v2, SLICE), { recursive: true });
  return join(v2.slice(ROOT.length + 1), SLICE);
}

/** v2: the controllers must be enabled in every ancestor's subtree_control. */
async function enableControllers(root: string, rel: string): Promise<void> {
  let dir = root;
  for (const part of rel.split('/')) {
    await writeFile(join(dir, 'cgroup.subtree_control'), '+memory +cpu +pids').catch((e: unknown) => {
      throw new DriverError(`cannot enable the memory, cpu and pids controllers in ${dir}: ${errorMessage(e)}`);
    });
    dir = join(dir, part);
    await mkdir(dir, { recursive: true });
  }
  await writeFile(join(dir, 'cgroup.subtree_control'), '+memory +cpu +pids');
}

/**
 * Make the VM's cgroup with its limits (a leftover of the same name is removed first).
 * Undefined when the host has no usable cgroup controllers (logged once): the VM then runs
 * without limits rather than not at all.
 */
export async function createVmCgroup(stateDir: string, vmId: string, limits: VmLimits): Promise<VmCgroup | undefined> {
  const layout = cgroupLayout();
  if (layout === null) {
    warnOnce('no writable memory, cpu and pids cgroup controllers: VMs run without cgroup limits');
    return undefined;
  }
  const cg: VmCgroup = { vmId, procsFiles: [], dirs: [] };
  try {
    if (layout.kind === 'v2') await enableControllers(layout.root, stateFolder(stateDir));
    for (const p of parents(stateDir, layout)) {
      const dir = join(p.dir, vmId);
      await rmdir(dir).catch(() => undefined);
      await mkdir(dir, { recursive: true });
      cg.dirs.push(dir);
      cg.procsFiles.push(join(dir, 'cgroup.procs'));
      await writeLimits(dir, p.ctrl, limits);
    }
    return cg;
  } catch (err) {
    await removeVmCgroup(cg);
    throw new DriverError(`cannot make the cgroup of VM ${vmId}: ${errorMessage(err)}`, { cause: err });
  }
}

async function writeLimits(dir: string, ctrl: 'all' | 'memory' | 'cpu' | 'pids' | 'none', l: VmLimits): Promise<void> {
  if (ctrl === 'none') return;
  const quota = Math.max(1000, Math.round(l.cpus * CPU_PERIOD_US));
  if (ctrl === 'all') {
    await writeFile(join(dir, 'memory.max'), String(l.memBytes));
    // No swap for guest RAM: a VM over its limit is OOM-killed, not slowed for everyone.
    await writeFile(join(dir, 'memory.swap.max'), '0').catch(() => undefined);
    await writeFile(join(dir, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
    await writeFile(join(dir, 'pids.max'), String(l.pids));
  } else if (ctrl === 'memory') {
    await writeFile(join(dir, 'memory.limit_in_bytes'), String(l.memBytes));
  } else if (ctrl === 'cpu') {
    await writeFile(join(dir, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
    await writeFile(join(dir, 'cpu.cfs_quota_us'), String(quota));
  } else {
    await writeFile(join(dir, 'pids.max'), String(l.pids));
  }
}

/**
 * Remove the VM's cgroup once its processes are gone. The kernel refuses (EBUSY) while a
 * process is still in it: an exited QEMU can take a moment to leave, so this retries briefly.
 */
export async function removeVmCgroup(cg: VmCgroup): Promise<void> {
  for (const dir of cg.dirs) {
    for (let i = 0; ; i++) {
      try {
        await rmdir(dir);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (i >= 50) {
          log.warn(`cgroup ${dir} of VM ${cg.vmId} could not be removed: ${errorMessage(e)}`);
          break;
        }
        await sleep(100);
      }
    }
  }
}

/**
 * The Copper cgroup a running process sits in (read from /proc/PID/cgroup), for a VM found
 * again after a gcd restart: its folders are removed when it ends. Undefined for a process
 * outside copper.slice.
 */
export function vmCgroupOfPid(pid: number, vmId: string): VmCgroup | undefined {
  const layout = cgroupLayout();
  if (layout === null) return undefined;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
  const dirs: string[] = [];
  for (const line of text.split('\n')) {
    const [, ctrls, path] = line.split(':');
    if (path === undefined || !path.includes(`/${SLICE}/`) || !path.endsWith(`/${vmId}`)) continue;
    const list = (ctrls ?? '').split(',');
    if (layout.kind === 'v2' && ctrls === '') dirs.push(join(layout.root, path));
    if (layout.kind === 'v1' && ctrls === '' && layout.unified !== undefined) dirs.push(join(layout.unified, path));
    if (layout.kind === 'v1') {
      for (const c of ['memory', 'cpu', 'pids'] as const) if (list.includes(c)) dirs.push(join(layout.mounts[c], path));
    }
  }
  return dirs.length ? { vmId, dirs, procsFiles: dirs.map((d) => join(d, 'cgroup.procs')) } : undefined;
}

/** Remove this state folder's cgroup folder once empty (tests, and removing a state folder). */
export async function removeStateCgroups(stateDir: string): Promise<void> {
  await sweepVmCgroups(stateDir);
  const layout = cgroupLayout();
  if (layout === null) return;
  for (const p of parents(stateDir, layout)) await rmdir(p.dir).catch(() => undefined);
}

/** Remove this state folder's empty VM cgroups (VMs that ended while gcd was down). */
export async function sweepVmCgroups(stateDir: string): Promise<number> {
  const layout = cgroupLayout();
  if (layout === null) return 0;
  let removed = 0;
  for (const p of parents(stateDir, layout)) {
    const names = await readdir(p.dir, { withFileTypes: true }).catch(() => []);
    for (const d of names) {
      if (!d.isDirectory()) continue;
      // rmdir fails with EBUSY on a cgroup that still holds a process: a live VM keeps its own.
      if (
        await rmdir(join(p.dir, d.name)).then(
          () => true,
          () => false,
        )
      )
        removed++;
    }
  }
  return removed;
}

/** VmProcess.spawn's `cgroup` for a guest VM: its limits from its config and the settings. */
export function vmCgroupSpec(stateDir: string, cfg: VmConfig): { stateDir: string; limits: VmLimits } {
  return { stateDir, limits: vmLimitsFor(cfg, setting('vmMemOverheadMiB'), setting('vmPidsMax')) };
}

/** Limits of a VM from its size: RAM up to maxmem, the TCG buffer, plus an allowance. */
export function vmLimitsFor(
  size: { memMiB: number; maxMemMiB?: number; vcpus: number; maxVcpus?: number; tcgTbMiB?: number },
  overheadMiB: number,
  pids: number,
): VmLimits {
  const ramMiB = Math.max(size.memMiB, size.maxMemMiB ?? 0) + (size.tcgTbMiB ?? 0);
  // One CPU beyond the vCPUs: QEMU's main loop (slirp, disk I/O) and the helpers it spawns
  // (guestfwd's socat) share the quota with vCPU threads that can each take a whole CPU (TCG).
  return { memBytes: (ramMiB + overheadMiB) * 1024 * 1024, cpus: Math.max(size.vcpus, size.maxVcpus ?? 0) + 1, pids };
}

let warned = false;
function warnOnce(msg: string): void {
  if (warned) return;
  warned = true;
  log.warn(msg);
}
