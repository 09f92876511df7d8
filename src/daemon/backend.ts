import type { Settings } from '../config/settings.js';
import type { Driver } from '../drivers/driver.js';
import type { ChannelServer } from '../api/channels.js';
import type { ToolServices } from '../cli/tool.js';
import { fakeBackend } from './fake-backend.js';
import type { QuotaConfig } from '../config/quotas.js';

/** The virtualization side gcd runs with: QEMU by default; the test double only when asked. */
export interface Backend {
  driver: Driver;
  headnodes: ToolServices['headnodes'];
  gc?: ToolServices['gc'];
  close(): Promise<void>;
}

export async function createBackend(settings: Settings, channels: ChannelServer, quotas?: () => QuotaConfig): Promise<Backend> {
  if (settings.driver === 'fake') {
    const f = fakeBackend(settings.stateDir, settings.fakeHeadnodes);
    return { driver: f.driver, headnodes: f.headnodes, close: () => f.driver.close() };
  }
  const { qemuBackend } = await import('./qemu-backend.js');
  return qemuBackend(settings, channels, quotas ? { quotas } : {});
}
