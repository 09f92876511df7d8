/**
 * What runs inside the guests of a cluster, through the guest agent as `sh -c SCRIPT sh ARGS`.
 * Under TCG every exec of a program costs 0.1-0.3 s, so these use shell builtins except for
 * one `ip -batch` each.
 *
 * /etc/copper/clone.env (KEY=VALUE lines, sourceable by sh) tells a VM what it is:
 *   COPPER_CLONE=1|0  COPPER_CLONE_ID  COPPER_GENERATION  COPPER_PARENT  COPPER_HEADNODE
 *   COPPER_CLUSTER_IP  COPPER_CLUSTER_NAME  COPPER_CLUSTER_SUBNET
 *   COPPER_BATCH_RANK  COPPER_BATCH_SIZE   (0..N-1 and N of the `gc clone N` that made it)
 *   COPPER_VM (last line)
 * It is written last and in one write(), after the network is set: the guest's `gc clone`
 * (copper.py) watches COPPER_VM change to learn that it now runs in a new clone.
 */
import { GUEST_CLONE_INIT } from '../vm/guest-programs.js';
import { CLUSTER_IFNAME, CLUSTER_NIC_PCI, NETWORK_PREFIX, HOSTS_BEGIN, HOSTS_END } from './addressing.js';

export const CLONE_ENV_PATH = '/etc/copper/clone.env';

export interface MemberIdentity {
  /** 0 for the headnode. */
  id: number;
  generation: number;
  /** Name of the VM it was forked from ('' for the headnode). */
  parent: string;
  headnode: string;
  address: string;
  name: string;
  subnet: string;
  vmId: string;
  /** Position in its `gc clone N` batch (0..N-1) and N; absent for the headnode. */
  rank?: number;
  batchSize?: number;
}

export function cloneEnvText(m: MemberIdentity): string {
  const lines: Array<[string, string | number]> = [
    ['COPPER_CLONE', m.id === 0 ? 0 : 1],
    ['COPPER_CLONE_ID', m.id],
    ['COPPER_GENERATION', m.generation],
    ['COPPER_PARENT', m.parent],
    ['COPPER_HEADNODE', m.headnode],
    ['COPPER_CLUSTER_IP', m.address],
    ['COPPER_CLUSTER_NAME', m.name],
    ['COPPER_CLUSTER_SUBNET', m.subnet],
    ['COPPER_BATCH_RANK', m.rank ?? ''],
    ['COPPER_BATCH_SIZE', m.batchSize ?? ''],
    ['COPPER_VM', m.vmId],
  ];
  return lines.map(([k, v]) => `${k}=${v}`).join('\n') + '\n';
}

/** The env file in one write() (dash's printf builds its output before writing it). */
const WRITE_ENV = `[ -d /etc/copper ] || mkdir -p /etc/copper || exit 1
printf '%s' "$ENVTEXT" >${CLONE_ENV_PATH} || exit 1`;

/**
 * The headnode, before each snapshot (idempotent): wait for the hot-plugged NIC at PCI slot 8,
 * name it cl0, give it the headnode's MAC and .1, put the cluster's names into /etc/hosts
 * once, write clone.env (COPPER_CLONE=0).
 * Args: MAC ADDRESS/PREFIX ENVTEXT HOSTSBLOCK
 */
export const HEADNODE_PREPARE = `set -u
MAC=$1 ADDR=$2 ENVTEXT=$3 HOSTS=$4
# Already set up (the usual case after the first fork): builtins only, no exec.
ready=
if [ -e /sys/class/net/${CLUSTER_IFNAME} ]; then
  read -r have </sys/class/net/${CLUSTER_IFNAME}/address
  read -r state </sys/class/net/${CLUSTER_IFNAME}/operstate
  if [ "$have" = "$MAC" ] && [ "$state" = up ]; then
    while read -r _ a _; do [ "$a" = "\${ADDR%/*}" ] && ready=1; done </proc/net/fib_trie
  fi
fi
if [ -z "$ready" ]; then
  if [ ! -e /sys/class/net/${CLUSTER_IFNAME} ]; then
    IF= n=0
    while :; do
      for d in /sys/class/net/*; do
        p=$(cd -P "$d/device" 2>/dev/null && pwd -P) || continue
        case "$p" in */${CLUSTER_NIC_PCI}/*) IF=\${d##*/} ;; esac
      done
      [ -n "$IF" ] && break
      n=$((n + 1))
      [ $n -ge 300 ] && { echo "the cluster NIC (PCI ${CLUSTER_NIC_PCI}) did not appear in the guest" >&2; exit 1; }
      sleep 0.1
    done
    ip link set dev "$IF" down && ip link set dev "$IF" name ${CLUSTER_IFNAME} || exit 1
  fi
  echo 1 >/proc/sys/net/ipv6/conf/${CLUSTER_IFNAME}/disable_ipv6 2>/dev/null
  echo 1 >/proc/sys/net/ipv4/conf/${CLUSTER_IFNAME}/arp_notify 2>/dev/null
  ip -batch - <<EOF || exit 1
link set dev ${CLUSTER_IFNAME} address $MAC
addr replace $ADDR dev ${CLUSTER_IFNAME}
link set dev ${CLUSTER_IFNAME} up
EOF
fi
FIRST=\${HOSTS%%
*}
have=
while IFS= read -r line; do [ "$line" = "$FIRST" ] && have=1; done </etc/hosts
if [ -z "$have" ]; then
  kept= skip=
  while IFS= read -r line; do
    case "$line" in
      "${HOSTS_BEGIN}"*) skip=1; continue ;;
      "${HOSTS_END}") skip=; continue ;;
    esac
    [ -z "$skip" ] && kept="$kept$line
"
  done </etc/hosts
  printf '%s%s' "$kept" "$HOSTS" >/etc/hosts || exit 1
fi
${WRITE_ENV}
`;

/**
 * A new clone, right after the restore, in one guest exec (QemuDriver runs no clone-init for
 * cluster clones: under TCG every first exec of a program in a fresh clone costs 0.15-0.45 s):
 * the clock (it stopped at the snapshot), entropy, hostname, machine-id, then its own MAC and
 * address on cl0 (it woke up with its parent's, link down), then clone.env. When the owner's
 * shared volume is mounted (sshfs), clone-init does the first part instead: it knows how to
 * remount /shared through this clone's own QEMU.
 * Args: MAC ADDRESS/PREFIX ENVTEXT HOSTNAME MACHINE_ID EPOCH SEED
 */
export const CLONE_IDENTITY = `set -u
MAC=$1 ADDR=$2 ENVTEXT=$3 NAME=$4 MID=$5 EPOCH=$6 SEED=$7
SHARED=
while read -r _ dir fstype _; do
  [ "$dir" = /shared ] && [ "$fstype" = fuse.sshfs ] && SHARED=1
done </proc/mounts
if [ -n "$SHARED" ] && [ -x ${GUEST_CLONE_INIT} ]; then
  printf '%s' "$SEED" | ${GUEST_CLONE_INIT} "$NAME" "$MID" "$EPOCH" || exit 1
else
  date -u -s "@$EPOCH" >/dev/null || echo "setting the clock failed" >&2
  printf '%s' "$SEED" >/dev/urandom
  echo "$NAME" >/proc/sys/kernel/hostname && echo "$NAME" >/etc/hostname && echo "$MID" >/etc/machine-id || exit 1
fi
[ -e /sys/class/net/${CLUSTER_IFNAME} ] || { echo "the clone has no cluster interface ${CLUSTER_IFNAME}" >&2; exit 1; }
ip -batch - <<EOF || exit 1
link set dev ${CLUSTER_IFNAME} down
link set dev ${CLUSTER_IFNAME} address $MAC
addr flush dev ${CLUSTER_IFNAME}
addr add $ADDR dev ${CLUSTER_IFNAME}
link set dev ${CLUSTER_IFNAME} up
EOF
${WRITE_ENV}
`;

export function withPrefix(address: string): string {
  return `${address}/${NETWORK_PREFIX}`;
}
