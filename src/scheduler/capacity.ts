import { settings } from '../config/settings.js';
import { UsageError } from '../errors.js';

/**
 * What the host may give to clones at once. A job reserves its ncpus and its clone's RAM
 * (the headnode's RAM: a clone cannot have another size) until its clone is destroyed.
 */
export interface CapacityLimits {
  ncpus: number;
  memMiB: number;
}

export function defaultCapacity(env: NodeJS.ProcessEnv = process.env): CapacityLimits {
  const s = settings(env);
  return { ncpus: s.capacityNcpus, memMiB: s.capacityMemMiB };
}

export class Capacity {
  private usedCpus = 0;
  private usedMem = 0;
  constructor(public limits: CapacityLimits) {}

  /** Why a job of this size cannot start now, or undefined if it can (and is then reserved). */
  tryReserve(ncpus: number, memMiB: number): string | undefined {
    if (ncpus > this.limits.ncpus) return `Resources: job asks ${ncpus} cpus, the host gives at most ${this.limits.ncpus}`;
    if (memMiB > this.limits.memMiB) return `Resources: job needs ${memMiB} MiB, the host gives at most ${this.limits.memMiB}`;
    if (this.usedCpus + ncpus > this.limits.ncpus) return `Resources: waiting for ${ncpus} cpus (${this.usedCpus}/${this.limits.ncpus} in use)`;
    if (this.usedMem + memMiB > this.limits.memMiB) return `Resources: waiting for ${memMiB} MiB (${this.usedMem}/${this.limits.memMiB} in use)`;
    this.usedCpus += ncpus;
    this.usedMem += memMiB;
    return undefined;
  }

  release(ncpus: number, memMiB: number): void {
    this.usedCpus = Math.max(0, this.usedCpus - ncpus);
    this.usedMem = Math.max(0, this.usedMem - memMiB);
  }

  get used(): CapacityLimits {
    return { ncpus: this.usedCpus, memMiB: this.usedMem };
  }
}

/** PBS size text: the largest exact unit (`8gb`, `1536mb`). */
function sizeText(mib: number): string {
  if (mib > 0 && mib % 1024 ** 2 === 0) return `${mib / 1024 ** 2}tb`;
  if (mib > 0 && mib % 1024 === 0) return `${mib / 1024}gb`;
  return `${mib}mb`;
}

/**
 * A job that can never fit must fail at once rather than wait forever, as PBS refuses it:
 * one line naming the resource, the request and the largest host's amount.
 */
export function neverFits(limits: CapacityLimits, ncpus: number, memMiB: number): string | undefined {
  if (ncpus > limits.ncpus) return `ncpus=${ncpus} exceeds the largest host (${limits.ncpus})`;
  if (memMiB > limits.memMiB) return `mem=${sizeText(memMiB)} exceeds the largest host (${sizeText(limits.memMiB)})`;
  return undefined;
}

/** The snapshot's shape, as far as a clone's size goes. */
export interface CloneShape {
  memMiB?: number;
  vcpus?: number;
  maxVcpus?: number;
}

/**
 * `resources`: what the job reserves on the host (as asked; a clone inherits the headnode's
 * RAM, so never less). `assigned`: what its clone has now, before any memory hot-plug: the
 * snapshot's RAM, and the asked vCPUs up to the snapshot's slots. A request above the host's
 * capacity is refused with neverFits's line.
 */
export function resolveAssignment(asked: { ncpus: number; memMiB: number }, snap: CloneShape, limits: CapacityLimits): {
  resources: { ncpus: number; memMiB: number };
  assigned: { ncpus: number; memMiB: number };
} {
  const memMiB = Math.max(asked.memMiB, snap.memMiB ?? 0);
  const resources = { ncpus: asked.ncpus, memMiB };
  const never = neverFits(limits, resources.ncpus, resources.memMiB);
  if (never) throw new UsageError(never);
  const slots = snap.maxVcpus ?? snap.vcpus;
  return { resources, assigned: { ncpus: slots === undefined ? asked.ncpus : Math.min(asked.ncpus, slots), memMiB: snap.memMiB ?? memMiB } };
}
