/**
 * Virtual clusters inside gcd's QEMU backend: their own driver (detached clones, folders under
 * <stateDir>/clusters/vm and <ramDir>/clusters), the service, the calls the API and the `gc`
 * commands make of it, and the headnode-destroy hook (a destroyed headnode's cluster goes with it).
 */
import { join } from 'node:path';
import type { Settings } from '../config/settings.js';
import type { QuotaConfig } from '../config/quotas.js';
import { VmHost } from '../vm/host.js';
import { snapshotRamFromEnv } from '../vm/migration.js';
import type { ClusterNic } from '../vm/vm-args.js';
import { errorMessage } from '../errors.js';
import type { QemuHeadnodeManager } from '../headnodes/manager.js';
import type { GuestChannels, HeadnodeManager } from '../headnodes/types.js';
import { log } from '../log.js';
import { ClusterCalls } from '../clusters/calls.js';
import { maxClonesSetting } from '../clusters/quota.js';
import { ClusterService } from '../clusters/service.js';

export interface ClusterWiringOptions {
  settings: Pick<Settings, 'stateDir' | 'ramDir' | 'configDir'>;
  channels: GuestChannels;
  headnodes: QemuHeadnodeManager;
  /** Shared with the job driver: no snapshot starts while another driver streams that headnode. */
  streams: Map<string, Promise<void>>;
  /** The admin quota file in force (gcd's one watcher). */
  quotas: () => QuotaConfig;
}

export interface Clusters {
  service: ClusterService;
  /** For QemuDriverOptions.clusterNicOf of every driver that snapshots headnodes. */
  clusterNicOf(headnode: string): ClusterNic | undefined;
  /** What the API's /v1/clusters routes and the `gc clone|clones|kill|whoami` commands call. */
  calls: ClusterCalls;
  /** The manager, with destroy() taking the headnode's cluster down first. */
  guard(m: HeadnodeManager): HeadnodeManager;
  close(): Promise<void>;
}

/** Where the clusters' driver keeps its clones and snapshots. */
export function clusterVmSettings(s: Pick<Settings, 'stateDir' | 'ramDir'>): Pick<Settings, 'stateDir' | 'ramDir'> {
  return { stateDir: join(s.stateDir, 'clusters', 'vm'), ramDir: join(s.ramDir, 'clusters') };
}

export async function openClusters(o: ClusterWiringOptions): Promise<Clusters> {
  const quotas = o.quotas;
  const maxPerUser = maxClonesSetting();
  const readQuotas = quotas;
  let service: ClusterService | undefined;
  const clusterNicOf = (hn: string): ClusterNic | undefined => service?.clusterNicOf(hn);
  const driver = new VmHost({
    settings: clusterVmSettings(o.settings),
    channels: o.channels,
    headnodes: o.headnodes,
    cloneLifetime: 'detached',
    streams: o.streams,
    snapshotRam: snapshotRamFromEnv(),
    clusterNicOf,
  });
  try {
    service = await ClusterService.open({
      stateDir: o.settings.stateDir,
      driver,
      headnodes: o.headnodes,
      quota: () => ({ config: readQuotas(), maxPerUser }),
    });
  } catch (err) {
    await driver.detach();
    throw err;
  }
  const s = service;
  return {
    service: s,
    clusterNicOf,
    calls: new ClusterCalls(s),
    guard(m: HeadnodeManager): HeadnodeManager {
      return {
        create: (spec) => m.create(spec),
        start: (name) => m.start(name),
        stop: (name) => m.stop(name),
        list: () => m.list(),
        get: (name) => m.get(name),
        ...(m.setSshKeys ? { setSshKeys: m.setSshKeys.bind(m) } : {}),
        reattach: () => m.reattach(),
        close: () => m.close(),
        async destroy(name) {
          await s.dropHeadnode(name).catch((err: unknown) => {
            log.error(`headnode ${name}: destroying its cluster: ${errorMessage(err)}`);
            throw err;
          });
          await m.destroy(name);
        },
      };
    },
    async close() {
      await s.close();
    },
  };
}
