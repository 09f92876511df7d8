/**
 * Addresses of a virtual cluster, all derived from two numbers: the cluster's network index
 * (one per headnode, allocated by the registry) and the clone id (0 is the headnode).
 *
 *   L2            QEMU `-netdev socket,mcast=239.193.<i/256>.<i%256>:<20000+i>,localaddr=127.0.0.1`:
 *                 a multicast group on the host's loopback, one per headnode, so no other
 *                 user's VM is on it and nothing leaves the host.
 *   IPv4          10.<100+i/256>.<i%256>.0/24: the headnode is .1, clone k is .(k+1).
 *   MAC           52:54:0c:<i/256>:<i%256>:<k+1> (locally administered, unicast).
 *   names         `<headnode>` and `<headnode>-c<k>`, in every member's /etc/hosts.
 *   VM ids        `<headnode>.c<k>` for QEMU, files and API channels: a '.' never appears in
 *                 a headnode name, so a clone can never take a headnode's channel.
 * Because everything is derived, a name written once into /etc/hosts stays right for every
 * clone ever made with that id: no VM has to be told when another one comes or goes.
 */
import { UsageError } from '../errors.js';
import type { ClusterNic } from '../vm/vm-args.js';

/** Clone ids run from 1 to 253 (.2 to .254 in the /24). */
export const MAX_CLONE_ID = 253;
/** Network indexes 0..16383: 10.100.0.0 - 10.163.255.0, ports 20000-36383. */
export const MAX_NETWORKS = 16384;
export const NETWORK_PREFIX = 24;
/** The guest interface name the cluster NIC gets (kept by clones: it is in their memory). */
export const CLUSTER_IFNAME = 'cl0';
/** PCI function of the cluster NIC (vm-args.ts: slot 8). */
export const CLUSTER_NIC_PCI = '0000:00:08.0';

export interface ClusterNetwork {
  index: number;
  /** group:port */
  mcast: string;
  /** e.g. 10.100.3.0/24 */
  subnet: string;
}

function checkIndex(index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_NETWORKS) throw new UsageError(`cluster network index ${index} out of range`);
}

function checkHost(id: number): void {
  if (!Number.isInteger(id) || id < 0 || id > MAX_CLONE_ID) throw new UsageError(`clone id ${id} out of range 0..${MAX_CLONE_ID}`);
}

export function clusterNetwork(index: number): ClusterNetwork {
  checkIndex(index);
  const hi = index >> 8;
  const lo = index & 255;
  return { index, mcast: `239.193.${hi}.${lo}:${20000 + index}`, subnet: `10.${100 + hi}.${lo}.0/${NETWORK_PREFIX}` };
}

/** IPv4 address of member `id` (0: the headnode) without the prefix length. */
export function memberAddress(index: number, id: number): string {
  checkIndex(index);
  checkHost(id);
  return `10.${100 + (index >> 8)}.${index & 255}.${id + 1}`;
}

export function memberMac(index: number, id: number): string {
  checkIndex(index);
  checkHost(id);
  const hex = (n: number): string => n.toString(16).padStart(2, '0');
  return `52:54:0c:${hex(index >> 8)}:${hex(index & 255)}:${hex(id + 1)}`;
}

/** The QEMU backend of member `id`'s cluster NIC. */
export function memberNic(index: number, id: number): ClusterNic {
  return { kind: 'mcast', mcast: clusterNetwork(index).mcast, mac: memberMac(index, id), localaddr: '127.0.0.1' };
}

/** Host name of a clone inside the cluster. */
export function cloneName(headnode: string, id: number): string {
  checkHost(id);
  return `${headnode}-c${id}`;
}

/** QEMU name, file name and API channel of a clone. */
export function cloneVmId(headnode: string, id: number): string {
  checkHost(id);
  return `${headnode}.c${id}`;
}

/** Inverse of cloneVmId; undefined for anything else. */
export function parseCloneVmId(vmId: string): { headnode: string; id: number } | undefined {
  const m = /^([a-z0-9-]+)\.c([0-9]{1,3})$/.exec(vmId);
  if (!m) return undefined;
  const id = Number(m[2]);
  if (id < 1 || id > MAX_CLONE_ID || String(id) !== m[2]) return undefined;
  return { headnode: m[1]!, id };
}

export const HOSTS_BEGIN = '# copper cluster: begin';
export const HOSTS_END = '# copper cluster: end';

/** The /etc/hosts block of a cluster: the headnode and every possible clone id. */
export function hostsBlock(headnode: string, index: number): string {
  const lines = [`${HOSTS_BEGIN} ${clusterNetwork(index).subnet}`, `${memberAddress(index, 0)}\t${headnode}`];
  for (let k = 1; k <= MAX_CLONE_ID; k++) lines.push(`${memberAddress(index, k)}\t${cloneName(headnode, k)}`);
  lines.push(HOSTS_END);
  return lines.join('\n') + '\n';
}
