/**
 * The cluster NIC of a headnode: a virtio-net device (id nic1, PCI slot 8, vm-args.ts) on the
 * cluster's multicast L2, hot-plugged (netdev_add + device_add) into the running headnode the
 * first time it forks a cluster, so headnodes need no restart and carry no device they never
 * use. Its snapshot then holds the device, and every clone is started with it (the device
 * layout of a migration's two ends must match). It lasts as long as the headnode's QEMU.
 */
import { DriverError, errorMessage } from '../errors.js';
import type { QmpClient } from '../vm/qmp.js';
import type { ClusterNic } from '../vm/vm-args.js';

export const CLUSTER_NIC_ID = 'nic1';
export const CLUSTER_NETDEV_ID = 'net1';

/** True when the headnode already has a cluster NIC; plugs one in otherwise. */
export async function ensureClusterNic(qmp: QmpClient, nic: Extract<ClusterNic, { kind: 'mcast' }>): Promise<boolean> {
  const devices = await qmp.execute<Array<{ name: string }>>('qom-list', { path: '/machine/peripheral' });
  if (devices.some((d) => d.name === CLUSTER_NIC_ID)) {
    const mac = await qmp.execute<string>('qom-get', { path: `/machine/peripheral/${CLUSTER_NIC_ID}`, property: 'mac' });
    if (mac.toLowerCase() !== nic.mac.toLowerCase()) {
      throw new DriverError(`the headnode's cluster NIC has MAC ${mac}, not ${nic.mac}: restart the headnode`);
    }
    return true;
  }
  // A netdev left by an attempt whose device_add failed.
  await qmp.execute('netdev_del', { id: CLUSTER_NETDEV_ID }).catch(() => undefined);
  const netdev: Record<string, string> = { type: 'socket', id: CLUSTER_NETDEV_ID, mcast: nic.mcast };
  if (nic.localaddr !== undefined) netdev.localaddr = nic.localaddr;
  try {
    await qmp.execute('netdev_add', netdev);
  } catch (err) {
    throw new DriverError(`cluster network ${nic.mcast}: ${errorMessage(err)}`, { cause: err });
  }
  try {
    await qmp.execute('device_add', { driver: 'virtio-net-pci', netdev: CLUSTER_NETDEV_ID, id: CLUSTER_NIC_ID, mac: nic.mac, bus: 'pci.0', addr: '0x8' });
  } catch (err) {
    await qmp.execute('netdev_del', { id: CLUSTER_NETDEV_ID }).catch(() => undefined);
    throw new DriverError(`plugging the cluster NIC into the headnode: ${errorMessage(err)}`, { cause: err });
  }
  return false;
}
