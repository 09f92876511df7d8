/**
 * A clone's vCPU count (`-l ncpus`), changed by ACPI CPU hotplug on the i440fx machine.
 *
 * The restore needs the snapshot's exact -smp (vcpus and maxcpus), so a clone starts with the
 * headnode's CPUs and is resized after the device state is loaded and before `cont`:
 *   more: device_add into free slots of -smp maxcpus. Never after `cont` under TCG: a new vCPU
 *         thread needs a free region of the translation cache, which a running clone has
 *         already handed out (QEMU 7.2 aborts in tcg_region_initial_alloc).
 *   fewer: device_del of the highest boot CPUs (not CPU 0); the guest kernel offlines and
 *         ejects them itself.
 * Either way the guest reports each slot it handled with an ACPI _OST (QMP ACPI_DEVICE_OST,
 * status 0). An added CPU then still has to be put online inside the guest (no udev there):
 * clone-init does it.
 */
import { DriverError } from '../errors.js';
import type { QmpClient } from './qmp.js';

interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: { 'socket-id'?: number; 'core-id'?: number; 'thread-id'?: number; 'die-id'?: number };
  'qom-path'?: string;
}

interface CpuInfoFast {
  'cpu-index': number;
  'qom-path': string;
}

/** ACPI _OST source codes (ACPI spec 6.3.5): what the guest is answering. */
const OST_INSERT = 1;
const OST_EJECT = 3;
/** The one "pending" status of each (the rest of 0x80-0x8F are refusals, e.g. eject 0x82 busy). */
const OST_PENDING: Record<number, number> = { [OST_INSERT]: 0x80, [OST_EJECT]: 0x84 };

export interface VcpuChange {
  added: number;
  removed: number;
  /** vCPUs the clone will have. */
  count: number;
  /** Resolves once the guest has taken every change (after `cont`); rejects at the deadline. */
  settled(deadline: number): Promise<void>;
}

/**
 * Resize a paused, restored clone from `have` to `want` vCPUs (at most `max`, the -smp
 * maxcpus it was started with). Call before `cont`; await `settled` after it.
 */
export async function resizeVcpus(qmp: QmpClient, have: number, max: number, want: number): Promise<VcpuChange> {
  if (!Number.isInteger(want) || want < 1) throw new DriverError(`a clone needs at least 1 vCPU, not ${want}`);
  if (want > max) throw new DriverError(`${want} vCPUs asked, but this snapshot's clones can have at most ${max}`);
  if (want === have) return { added: 0, removed: 0, count: have, settled: async () => undefined };

  let answered = 0;
  const failures: string[] = [];
  let wake = (): void => undefined;
  const expectSource = want > have ? OST_INSERT : OST_EJECT;
  const off = qmp.on('ACPI_DEVICE_OST', (ev) => {
    const info = (ev.data.info ?? {}) as { 'slot-type'?: string; source?: number; status?: number; slot?: string };
    if (info['slot-type'] !== 'CPU' || info.source !== expectSource) return;
    if (info.status === 0) answered++;
    else if (info.status === OST_PENDING[expectSource]) return; // an eject is answered 0x84 first
    else failures.push(`slot ${info.slot ?? '?'}: _OST status ${info.status ?? '?'}`);
    wake();
  });

  let added = 0;
  let removed = 0;
  try {
    if (want > have) {
      const slots = (await qmp.execute<HotpluggableCpu[]>('query-hotpluggable-cpus'))
        .filter((c) => c['qom-path'] === undefined)
        .sort((a, b) => order(a) - order(b));
      if (slots.length < want - have) throw new DriverError(`only ${slots.length} free vCPU slots for ${want - have} more vCPUs`);
      for (const slot of slots.slice(0, want - have)) {
        await qmp.execute('device_add', { driver: slot.type, id: `cpu${have + added}`, ...slot.props });
        added++;
      }
    } else {
      const cpus = (await qmp.execute<CpuInfoFast[]>('query-cpus-fast')).filter((c) => c['cpu-index'] !== 0).sort((a, b) => b['cpu-index'] - a['cpu-index']);
      for (const cpu of cpus.slice(0, have - want)) {
        await qmp.execute('device_del', { id: cpu['qom-path'] });
        removed++;
      }
    }
  } catch (err) {
    off();
    throw err instanceof DriverError ? err : new DriverError(`resizing the clone to ${want} vCPUs: ${String(err)}`, { cause: err });
  }

  const expected = added + removed;
  const settled = async (deadline: number): Promise<void> => {
    try {
      while (answered < expected && failures.length === 0) {
        const left = deadline - Date.now();
        if (left <= 0) throw new DriverError(`the guest took ${answered} of ${expected} vCPU ${added ? 'additions' : 'removals'} in time`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 1000));
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      if (failures.length) throw new DriverError(`the guest refused a vCPU ${added ? 'addition' : 'removal'}: ${failures.join('; ')}`);
      if (removed) {
        const left = (await qmp.execute<CpuInfoFast[]>('query-cpus-fast')).length;
        if (left !== want) throw new DriverError(`the clone still has ${left} vCPUs, not ${want}`);
      }
    } finally {
      off();
    }
  };
  return { added, removed, count: want, settled };
}

/** Lowest socket, then core, then thread first: CPUs fill up in the guest's numbering. */
function order(c: HotpluggableCpu): number {
  const p = c.props;
  return ((p['socket-id'] ?? 0) * 1024 + (p['die-id'] ?? 0) * 256 + (p['core-id'] ?? 0)) * 16 + (p['thread-id'] ?? 0);
}
