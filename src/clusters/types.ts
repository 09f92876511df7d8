/** What a virtual cluster shows of itself: the shapes of `gc clone|clones|kill|whoami --json`. */

export type CloneStatus = 'creating' | 'running' | 'killing' | 'dead';

export interface CloneInfo {
  /** 1..253 within its headnode's cluster. */
  id: number;
  /** Host name on the cluster network: `<headnode>-c<id>`. */
  name: string;
  headnode: string;
  /** 1 for a clone of the headnode, g+1 for a clone of a generation-g clone. */
  generation: number;
  /** Name of the VM it was forked from (the headnode or `<headnode>-c<k>`). */
  parent: string;
  /** `dead`: its QEMU is gone (gcd removes it within seconds). */
  state: CloneStatus;
  /** IPv4 address on the cluster network. */
  address: string;
  mac: string;
  createdAt: number;
  uptimeSec: number;
  /** When its time-to-live runs out (ms since 1970). */
  expiresAt?: number;
  /** Host memory of its QEMU process (MiB): proportional share, and pages it alone holds. */
  pssMiB?: number;
  privateMiB?: number;
  /** Host pid of its QEMU (admin only). */
  pid?: number;
}

/** Which clones `gc kill` means. */
export type KillSelector = { ids: number[] } | { generation: number } | { all: true };

export interface KillResult {
  killed: CloneInfo[];
}

/** `gc whoami`: the calling VM's place in its cluster. */
export interface WhoAmI {
  kind: 'headnode' | 'clone';
  headnode: string;
  /** 0 for the headnode. */
  id: number;
  generation: number;
  name: string;
  /** Cluster address; absent while the headnode has never forked a cluster. */
  address?: string;
  parent?: string;
}

/** `gc clones --usage`: who holds how many live clones. */
export interface CloneUsageRow {
  user: string;
  group: string;
  clones: number;
  /** The user's own limit (file or GC_MAX_CLONES); undefined: no limit. */
  limit?: number;
}
