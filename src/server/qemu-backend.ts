import type { Settings } from '../config/settings.js';
import type { ChannelServer } from '../api/channels.js';
import { QemuDriver } from '../drivers/qemu/qemu-driver.js';
import { snapshotRamFromEnv } from '../vm/migration.js';
import { defaultImageSource } from '../image/default-image.js';
import { QemuHeadnodeManager } from '../headnodes/manager.js';
import { headnodeDiskLimit } from '../headnodes/disk-quota.js';
import { log } from '../log.js';
import type { HeadnodeExec } from './commands/gc.js';
import type { ToolResult } from './commands/tool.js';
import type { Backend } from './backend.js';
import { openClusters } from './clusters.js';
import type { QuotaConfig } from '../config/quotas.js';
import { applyGuestEgress } from '../vm/guest-egress.js';
import { SharedVolumes, sharedQuotaMiB } from '../vm/shared-volumes.js';
import { sweepVmCgroups } from '../vm/vm-cgroup.js';

/** The product backend: QEMU headnodes, snapshots and clones. */
export async function qemuBackend(settings: Settings, channels: ChannelServer, quotas: () => QuotaConfig): Promise<Backend> {
  // Confinement (docs/security.md): the guests' egress filter, and cgroups of VMs that ended while gcd was down.
  await applyGuestEgress(settings.vmGid, settings.guestAllow);
  await sweepVmCgroups(settings.stateDir);
  const headnodes = new QemuHeadnodeManager({
    settings,
    channels,
    shared: new SharedVolumes({ stateDir: settings.stateDir, maxSessions: settings.sharedMaxSessions, quotaMiB: (owner) => sharedQuotaMiB(quotas(), owner) }),
    images: defaultImageSource({ stateDir: settings.stateDir, log: (line) => log.info(line) }),
    capacityMemMiB: settings.capacityMemMiB,
    diskLimit: headnodeDiskLimit(quotas),
  });
  // Headnodes outlive gcd: find the ones still running, and say which died meanwhile.
  await headnodes.reattach();
  // Job clones and virtual clusters have a driver each (different folders and lifetimes);
  // both snapshot the same headnodes, so they share the background-stream bookkeeping.
  const streams = new Map<string, Promise<void>>();
  const clusters = await openClusters({ settings, channels, headnodes, streams, quotas });
  const driver = new QemuDriver({
    settings,
    channels,
    headnodes,
    streams,
    snapshotRam: snapshotRamFromEnv(),
    maxOutputBytes: settings.maxOutputMiB * 1024 * 1024,
    clusterNicOf: (hn) => clusters.clusterNicOf(hn),
  });
  const exec: HeadnodeExec = async (name, argv, timeoutMs): Promise<ToolResult> => {
    // Take the agent under the headnode's lock but run outside it: the command may itself
    // submit a job, whose snapshot needs that lock.
    const agent = await headnodes.withRunning(name, async (h) => h.agent);
    const st = await agent.run(argv[0], argv.slice(1), { timeoutMs });
    return {
      stdout: st.out?.toString('utf8') ?? '',
      stderr: st.err?.toString('utf8') ?? '',
      exitCode: st.signal !== null ? 128 + st.signal : (st.exitCode ?? 1),
    };
  };
  return {
    driver,
    headnodes,
    admin: { headnodes: clusters.guard(headnodes), exec, clusters: clusters.calls },
    async close() {
      await driver.close();
      await clusters.close();
      await headnodes.close();
    },
  };
}
