import type { Settings } from '../config/settings.js';
import type { Driver } from '../drivers/driver.js';
import type { ChannelServer } from '../api/channels.js';
import type { ClusterCalls } from '../clusters/calls.js';
import type { QuotaConfig } from '../config/quotas.js';
import type { HeadnodeManager } from '../headnodes/types.js';
import type { HeadnodeExec } from './commands/gc.js';
import { fakeBackend } from './fake-backend.js';

/** The virtualization side gcd runs with: QEMU by default; the test double only when asked. */
export interface Backend {
  driver: Driver;
  /** What the job commands look headnodes up in. */
  headnodes: Pick<HeadnodeManager, 'get'> & Partial<HeadnodeManager>;
  /** QEMU only: headnode lifecycle, an admin's exec, and the virtual clusters (`gc ...`). */
  admin?: {
    /** destroy() takes the headnode's cluster down first. */
    headnodes: HeadnodeManager;
    exec: HeadnodeExec;
    clusters: ClusterCalls;
  };
  close(): Promise<void>;
}

export async function createBackend(settings: Settings, channels: ChannelServer, quotas: () => QuotaConfig): Promise<Backend> {
  if (settings.driver === 'fake') {
    const f = await fakeBackend(settings.stateDir, settings.fakeHeadnodes, channels);
    return { driver: f.driver, headnodes: f.headnodes, close: () => f.driver.close() };
  }
  const { qemuBackend } = await import('./qemu-backend.js');
  return qemuBackend(settings, channels, quotas);
}
