import type { Settings } from '../config/settings.js';
import type { ChannelServer } from '../api/channels.js';
import { QemuDriver } from '../drivers/qemu/qemu-driver.js';
import { defaultImageSource } from '../headnodes/default-image.js';
import { QemuHeadnodeManager } from '../headnodes/manager.js';
import { log } from '../log.js';
import { gcTool } from '../cli/tools/gc.js';
import type { Backend } from './backend.js';

/** The product backend: QEMU headnodes, snapshots and clones. */
export async function qemuBackend(settings: Settings, channels: ChannelServer): Promise<Backend> {
  const headnodes = new QemuHeadnodeManager({
    settings,
    channels,
    images: defaultImageSource({ stateDir: settings.stateDir, log: (line) => log.info(line) }),
  });
  // Headnodes outlive gcd: find the ones still running, and say which died meanwhile.
  await headnodes.reattach();
  const driver = new QemuDriver({ settings, channels, headnodes });
  return {
    driver,
    headnodes,
    gc: (req, s) => gcTool(req, s, headnodes),
    async close() {
      await driver.close();
      await headnodes.close();
    },
  };
}
