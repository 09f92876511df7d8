import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDriver } from '../drivers/fake/fake-driver.js';
import { NotFoundError, UsageError } from '../errors.js';
import type { GuestChannels, HeadnodeInfo, HeadnodeManager } from '../headnodes/types.js';

/**
 * TEST-ONLY backend (GC_DRIVER=fake): the test double driver plus a fixed list of
 * headnodes from GC_FAKE_HEADNODES="name:owner:group,...". Lets the CLI and crash tests
 * exercise gcd as a process quickly; the product backend is QEMU and is the default.
 * Each fake headnode gets its guest channel (`run/channels/<name>.sock`), as a running QEMU
 * headnode does, so that tests speak to gcd as that VM.
 */
export async function fakeBackend(
  stateDir: string,
  spec: string | undefined,
  channels?: GuestChannels,
): Promise<{ driver: FakeDriver; headnodes: Pick<HeadnodeManager, 'get' | 'list'> }> {
  const infos = new Map<string, HeadnodeInfo>();
  for (const item of (spec ?? '').split(',').filter(Boolean)) {
    const [name, owner, group] = item.split(':');
    if (!name || !owner) throw new UsageError(`GC_FAKE_HEADNODES: bad entry '${item}' (want name:owner[:group])`);
    infos.set(name, { name, owner, group: group ?? owner, memMiB: 512, vcpus: 1, diskGiB: 1, state: 'running', accel: 'tcg', createdAt: Date.now() });
  }
  for (const i of infos.values()) await channels?.open({ vmId: i.name, kind: 'headnode', headnode: i.name, owner: i.owner, group: i.group });
  const deliverRoot = join(stateDir, 'fake-headnodes');
  mkdirSync(deliverRoot, { recursive: true });
  const driver = new FakeDriver({ deliverRoot, headnodes: new Set(infos.keys()), snapshotDir: join(stateDir, 'fake-snapshots') });
  return {
    driver,
    headnodes: {
      async get(name: string) {
        const i = infos.get(name);
        if (!i) throw new NotFoundError(`unknown headnode ${name}`);
        return i;
      },
      async list() {
        return [...infos.values()];
      },
    },
  };
}
