/**
 * After a snapshot the running VM writes a new overlay on top of the frozen one; a background
 * block-stream then copies the frozen layer into it, so that the VM depends on its base only
 * and the snapshot owns its layer. One stream per VM at a time: the next snapshot waits.
 */
import { rm } from 'node:fs/promises';
import { DriverError, errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import { activeNode, backingOf, nodeForFile, streamDown } from '../disk-chain.js';
import { pruneGenerations } from '../disk-generations.js';
import { backingChain } from '../qemu-img.js';
import type { RunningVm } from './types.js';

export class DiskStreams {
  /**
   * Give every owner that snapshots the same VMs the same map, so that no snapshot starts
   * while another one's stream runs.
   */
  constructor(private readonly streams: Map<string, Promise<void>> = new Map()) {}

  /** Resolves once no stream of this VM runs. */
  async settled(name: string): Promise<void> {
    await this.streams.get(name);
  }

  all(): Promise<void>[] {
    return [...this.streams.values()];
  }

  start(h: RunningVm, top: string, bottom: string, frozenDisk: string): void {
    const qmp = h.vm.qmp;
    const active = h.paths.disk(h.diskGen);
    const run = (async () => {
      try {
        await streamDown(qmp, top, bottom, `stream-${h.diskGen}`);
        const backing = await backingOf(qmp, active);
        if (backing === frozenDisk) throw new DriverError('block-stream ended without removing the frozen layer');
        // The VM no longer needs its name for the frozen layer; the snapshot keeps its link.
        await rm(frozenDisk, { force: true });
      } catch (err) {
        if (!qmp.isClosed) log.warn(`headnode ${h.name}: background block-stream failed: ${errorMessage(err)}`);
      }
    })();
    const tracked = run.finally(() => {
      if (this.streams.get(h.name) === tracked) this.streams.delete(h.name);
    });
    this.streams.set(h.name, tracked);
  }
}

/**
 * If the VM's chain is longer than [active, base] (a stream was interrupted by a stop or
 * failed), stream now, before pausing: a snapshot's frozen layer must depend on the base only.
 */
export async function shortenChain(h: RunningVm): Promise<void> {
  const active = h.paths.disk(h.diskGen);
  const chain = await backingChain(active);
  if (chain.length <= 2) return;
  const baseIdx = chain.findIndex((c, i) => i > 0 && !c.filename.startsWith(h.paths.stateDir + '/'));
  if (baseIdx <= 1) return; // the rest of the chain is the (user's) base image itself
  const bottomFile = chain[baseIdx - 1]!.filename;
  const qmp = h.vm.qmp;
  const { node: top } = await activeNode(qmp);
  const bottom = await nodeForFile(qmp, bottomFile);
  log.info(`headnode ${h.name}: collapsing its disk chain (${chain.length} layers) before a snapshot`);
  await streamDown(qmp, top, bottom, `collapse-${h.diskGen}`);
  const after = await backingChain(active);
  if (after[1]?.filename.startsWith(h.paths.stateDir + '/')) {
    throw new DriverError(`headnode '${h.name}': could not shorten its disk chain (${after.length} layers)`);
  }
  await pruneGenerations(h.paths, h.diskGen);
}
