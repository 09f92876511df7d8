/** What a headnode is made of: its spec checked, its boot files, its QEMU configuration. */
import { access } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import type { HeadnodePaths } from '../vm/layout.js';
import { assertSelfContainedImage } from '../vm/image-trust.js';
import { backgroundSnapshotExpected, snapshotRamFromEnv } from '../vm/migration.js';
import type { VmConfig } from '../vm/vm-args.js';
import { DEFAULT_MEM_SLOTS, roundToBlock } from '../vm/mem-hotplug.js';
import type { BootFiles, HeadnodeRecord } from './record.js';
import type { Accel, HeadnodeSpec } from './types.js';

/** Where the default (project-built) image comes from; built and cached on first use. */
export interface ImageSource {
  /** Base disk, kernel, initrd and the full kernel command line for a headnode of that hostname. */
  defaultBoot(hostname: string): Promise<BootFiles>;
}

export const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;
const ACCOUNT_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
const LIMITS = { memMiB: [128, 262_144], vcpus: [1, 64], diskGiB: [1, 16_384] } as const;
/**
 * Hot-pluggable vCPU slots a new headnode gets for its clones, unless told otherwise. Empty
 * slots cost the guest ~200 KiB of per-CPU memory each and nothing else.
 */
export const DEFAULT_MAX_VCPUS = 8;

/**
 * The -m maxmem a headnode gets unless told: what the host may give its clones at once
 * (GC_CAPACITY_MEM_MIB), within the headnode memory limit. Empty slots cost only address space.
 */
export function defaultMaxMemMiB(memMiB: number, capacityMemMiB: number): number {
  return maxMemFor(memMiB, Math.min(capacityMemMiB, LIMITS.memMiB[1]));
}

/** maxmem: at least memMiB, and memMiB plus whole guest memory blocks (a DIMM is made of them). */
export function maxMemFor(memMiB: number, maxMemMiB: number): number {
  return memMiB + roundToBlock(Math.max(0, maxMemMiB - memMiB));
}

export function validateSpec(spec: HeadnodeSpec): void {
  if (!NAME_RE.test(spec.name)) {
    throw new UsageError(`invalid headnode name '${spec.name}': 1-32 lowercase letters, digits or '-' (a hostname)`);
  }
  if (!ACCOUNT_RE.test(spec.owner)) throw new UsageError(`invalid owner '${spec.owner}'`);
  if (!ACCOUNT_RE.test(spec.group)) throw new UsageError(`invalid group '${spec.group}'`);
  for (const key of ['memMiB', 'vcpus', 'diskGiB'] as const) {
    const v = spec[key];
    const [lo, hi] = LIMITS[key];
    if (!Number.isInteger(v) || v < lo || v > hi) throw new UsageError(`${key} must be an integer from ${lo} to ${hi}, not ${v}`);
  }
  const m = spec.maxVcpus;
  if (m !== undefined && (!Number.isInteger(m) || m < spec.vcpus || m > LIMITS.vcpus[1])) {
    throw new UsageError(`maxVcpus must be an integer from vcpus (${spec.vcpus}) to ${LIMITS.vcpus[1]}, not ${m}`);
  }
  const mm = spec.maxMemMiB;
  if (mm !== undefined && (!Number.isInteger(mm) || mm < spec.memMiB || mm > LIMITS.memMiB[1])) {
    throw new UsageError(`maxMemMiB must be an integer from memMiB (${spec.memMiB}) to ${LIMITS.memMiB[1]}, not ${mm}`);
  }
}

/** A headnode's base disk and boot files: the default image, or the user's own (checked). */
export async function bootFiles(spec: HeadnodeSpec, images: ImageSource): Promise<BootFiles> {
  if (spec.image === undefined) return images.defaultBoot(spec.name);
  for (const f of [spec.image, spec.kernel, spec.initrd]) {
    if (f === undefined) continue;
    if (!f.startsWith('/')) throw new UsageError(`'${f}' must be an absolute path`);
    await access(f).catch(() => {
      throw new UsageError(`'${f}' does not exist`);
    });
  }
  await assertSelfContainedImage(spec.image);
  const boot: BootFiles = { base: spec.image };
  if (spec.kernel !== undefined) {
    boot.kernel = spec.kernel;
    boot.append = 'root=/dev/vda rw console=ttyS0';
    if (spec.initrd !== undefined) boot.initrd = spec.initrd;
  } else if (spec.initrd !== undefined) {
    throw new UsageError('an initrd needs a kernel');
  }
  return boot;
}

/**
 * Kernel options of a headnode with memory slots, the default image's and a user's kernel
 * alike (part of the boot, so old records get them too):
 *   memhp_default_state=online  the kernel onlines hot-plugged DIMMs as it adds them (Debian's
 *                               leaves them offline);
 *   swiotlb=noforce             with slots, QEMU's ACPI SRAT announces hot-pluggable memory up
 *                               to maxmem, beyond 4 GiB, and the kernel then sets aside a 64 MiB
 *                               DMA bounce buffer (measured: MemTotal 400 MiB instead of 466 of
 *                               512). Nothing here needs it: virtio devices without
 *                               ACCESS_PLATFORM do not use the DMA API.
 */
const MEMORY_HOTPLUG_KERNEL_OPTIONS = ['memhp_default_state=online', 'swiotlb=noforce'];

function withMemoryOnline(append: string, cfg: VmConfig): string {
  if (cfg.memSlots === undefined) return append;
  const have = new Set(append.split(/\s+/).map((o) => o.split('=')[0]));
  const add = MEMORY_HOTPLUG_KERNEL_OPTIONS.filter((o) => !have.has(o.split('=')[0]));
  return add.length ? `${append} ${add.join(' ')}` : append;
}

/** The QEMU configuration a headnode boots with. */
export function headnodeVmConfig(
  rec: HeadnodeRecord,
  paths: HeadnodePaths,
  accel: Accel,
  apiSocket: string,
  sharedDir: string,
  tcgTbMiB: number | undefined,
): VmConfig {
  const cfg: VmConfig = {
    vmId: rec.spec.name,
    accel,
    memMiB: rec.spec.memMiB,
    vcpus: rec.spec.vcpus,
    maxVcpus: rec.spec.maxVcpus ?? rec.spec.vcpus,
    // No maxMemMiB (a record from before memory hot-plug, booted before that): no slots.
    ...(rec.spec.maxMemMiB !== undefined && rec.spec.maxMemMiB > rec.spec.memMiB ? { maxMemMiB: rec.spec.maxMemMiB, memSlots: DEFAULT_MEM_SLOTS } : {}),
    ramFile: paths.ramFile,
    ramShare: true,
    // Preallocated only where snapshots will be background ones (see VmConfig.ramPrealloc).
    ramPrealloc: backgroundSnapshotExpected() && snapshotRamFromEnv() !== 'copy',
    disk: paths.disk(rec.diskGen),
    qmpSocket: paths.qmp,
    qgaSocket: paths.qga,
    consoleSocket: paths.console,
    consoleLog: paths.consoleLog,
    apiSocket,
    sharedSftp: { dir: sharedDir },
  };
  if (rec.boot.kernel !== undefined) {
    cfg.kernel = rec.boot.kernel;
    if (rec.boot.initrd !== undefined) cfg.initrd = rec.boot.initrd;
    if (rec.boot.append !== undefined) cfg.append = withMemoryOnline(rec.boot.append, cfg);
  }
  const tb = tcgTbMiB ?? 256;
  if (accel === 'tcg' && tb > 0) cfg.tcgTbMiB = tb;
  return cfg;
}
