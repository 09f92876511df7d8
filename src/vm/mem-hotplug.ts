/**
 * A clone's memory (`-l mem`) above its headnode's RAM, added as pc-dimm devices by ACPI
 * memory hotplug on the i440fx machine.
 *
 * The restore needs the snapshot's exact `-m SIZE,slots=N,maxmem=M`, so a clone starts with
 * the headnode's RAM and gets the rest after the device state is loaded and before `cont`:
 * per DIMM a memory-backend-ram object (`object-add`, anonymous memory: the host commits only
 * the pages the job touches) and a `device_add pc-dimm` into a free slot. Not virtio-mem: it
 * does not mix with x-ignore-shared templating. The guest answers each DIMM with an ACPI _OST
 * (QMP ACPI_DEVICE_OST, slot-type DIMM, status 0) once its kernel has added it, and onlined it
 * when booted with memhp_default_state=online (headnodes/spec.ts puts it on the command line).
 *
 * Memory below the headnode's RAM stays the headnode's (forked, copy-on-write): never unplugged.
 *
 * DIMM sizes: the guest kernel adds memory in blocks of 128 MiB (x86-64 guests booted with less
 * than 64 GiB), so every DIMM is a multiple of that. Adding memory costs the guest 64 bytes of
 * struct page per 4 KiB page (1.6%), taken from the memory it already has online: a 16 GiB DIMM
 * in a 512 MiB guest would need half of it. So the DIMMs grow geometrically, each at most
 * GROWTH times what the guest has by then (the guest takes them in order: each one is online
 * before the next one's memmap is allocated): 512 MiB -> 16 GiB is 2, 10 and 3.5 GiB.
 */
import { DriverError, errorMessage } from '../errors.js';
import type { QmpClient } from './qmp.js';

/** The guest's memory block: a DIMM's size and the clone's RAM are multiples of it. */
export const MEM_BLOCK_MIB = 128;
/** DIMM slots a headnode boots with (-m slots=): 5 DIMMs take 128 MiB to 400 GiB. */
export const DEFAULT_MEM_SLOTS = 8;
/** The largest DIMM relative to the memory the guest has online when it comes. */
const GROWTH = 4;

/** ACPI _OST source "device check" (an insertion) and its one pending status (ACPI spec 6.3.5). */
const OST_INSERT = 1;
const OST_INSERT_PENDING = 0x80;

export interface MemoryChange {
  /** MiB hot-plugged (0 when the clone keeps the snapshot's RAM). */
  addedMiB: number;
  /** DIMMs added. */
  dimms: number;
  /** MiB of RAM the clone will have. */
  totalMiB: number;
  /** Resolves once the guest has taken every DIMM (after `cont`); rejects at the deadline. */
  settled(deadline: number): Promise<void>;
}

/** The layout memory can grow in: the snapshot's -m size, slots and maxmem. */
export interface MemoryLayout {
  memMiB: number;
  slots: number;
  maxMemMiB: number;
}

/** `n` rounded up to a whole number of guest memory blocks. */
export function roundToBlock(mib: number): number {
  return Math.ceil(mib / MEM_BLOCK_MIB) * MEM_BLOCK_MIB;
}

/**
 * The DIMM sizes (MiB) that take a clone of `layout` to at least `wantMiB`: none when it has
 * that already. Throws DriverError when the layout cannot hold it.
 */
export function planDimms(layout: MemoryLayout, wantMiB: number): number[] {
  if (!Number.isFinite(wantMiB) || wantMiB <= layout.memMiB) return [];
  const total = roundToBlock(wantMiB - layout.memMiB);
  if (layout.memMiB + total > layout.maxMemMiB || layout.slots < 1) {
    throw new DriverError(`${wantMiB} MiB asked, but this snapshot's clones can have at most ${layout.slots < 1 ? layout.memMiB : layout.maxMemMiB} MiB`);
  }
  const sizes: number[] = [];
  let online = layout.memMiB;
  let left = total;
  while (left > 0) {
    const cap = sizes.length === layout.slots - 1 ? left : Math.max(MEM_BLOCK_MIB, Math.floor((online * GROWTH) / MEM_BLOCK_MIB) * MEM_BLOCK_MIB);
    const size = Math.min(left, cap);
    sizes.push(size);
    online += size;
    left -= size;
  }
  return sizes;
}

/**
 * Grow a paused, restored clone of `layout` to `wantMiB` (see planDimms). Call before `cont`;
 * await `settled` after it.
 */
export async function growMemory(qmp: QmpClient, layout: MemoryLayout, wantMiB: number): Promise<MemoryChange> {
  const sizes = planDimms(layout, wantMiB);
  if (sizes.length === 0) return { addedMiB: 0, dimms: 0, totalMiB: layout.memMiB, settled: async () => undefined };

  const answered = new Set<string>();
  const failures: string[] = [];
  let wake = (): void => undefined;
  const off = qmp.on('ACPI_DEVICE_OST', (ev) => {
    const info = (ev.data.info ?? {}) as { 'slot-type'?: string; source?: number; status?: number; slot?: string; device?: string };
    if (info['slot-type'] !== 'DIMM' || info.source !== OST_INSERT) return;
    const slot = info.slot ?? info.device ?? '?';
    if (info.status === 0) answered.add(slot);
    else if (info.status === OST_INSERT_PENDING) return;
    else failures.push(`slot ${slot}: _OST status ${info.status ?? '?'}`);
    wake();
  });

  let added = 0;
  try {
    for (const [i, size] of sizes.entries()) {
      await qmp.execute('object-add', { 'qom-type': 'memory-backend-ram', id: `dimm${i}-mem`, size: size * 1024 * 1024 });
      await qmp.execute('device_add', { driver: 'pc-dimm', id: `dimm${i}`, memdev: `dimm${i}-mem` });
      added += size;
    }
  } catch (err) {
    off();
    throw new DriverError(`adding ${roundToBlock(wantMiB - layout.memMiB)} MiB of memory to the clone: ${errorMessage(err)}`, { cause: err });
  }

  const expected = sizes.length;
  const settled = async (deadline: number): Promise<void> => {
    try {
      while (answered.size < expected && failures.length === 0) {
        const left = deadline - Date.now();
        if (left <= 0) throw new DriverError(`the guest took ${answered.size} of ${expected} memory DIMMs (${added} MiB) in time`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 1000));
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      if (failures.length) throw new DriverError(`the guest refused hot-plugged memory: ${failures.join('; ')}`);
    } finally {
      off();
    }
  };
  return { addedMiB: added, dimms: expected, totalMiB: layout.memMiB + added, settled };
}
