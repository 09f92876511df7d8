/** Clones of a snapshot: what a caller asks for and what it gets back. */
import type { AgentClient } from '../agent.js';
import type { ClonePaths } from '../layout.js';
import type { ClusterNic } from '../vm-args.js';
import type { VmProcess } from '../vm-process.js';

/** A clone's name, its snapshot and the long-lived VM that snapshot came from (the job driver's CloneHandle). */
export interface CloneRef {
  cloneId: string;
  snapshotId: string;
  headnode: string;
}

export interface CloneStartOptions {
  /** Unique id chosen by the caller, e.g. `j42-0`; names the clone's files and process. */
  cloneId: string;
  snapshotId: string;
  /** Hostname the clone takes (clone-init). */
  hostname: string;
  /** vCPUs: more than the snapshot's are hot-plugged (up to its maxVcpus), fewer unplugged. Undefined: the snapshot's. */
  ncpus?: number;
  /** RAM in MiB: above the snapshot's, DIMMs are hot-plugged (up to its maxMemMiB). Undefined or less: the snapshot's. */
  memMiB?: number;
  /**
   * Backend of the clone's cluster NIC when its snapshot has one. Default: an isolated
   * backend, so that a job clone never joins its headnode's cluster L2 with its MAC and IP.
   */
  clusterNic?: ClusterNic;
  /**
   * Start with the cluster NIC's link down (QMP set_link, before the vCPUs run), so that the
   * clone says nothing on the cluster L2 under its parent's MAC and IP; the caller sets its
   * own identity in the guest and then the link up.
   */
  clusterLinkDown?: boolean;
  /**
   * When the clone takes its identity (hostname, machine-id, clock, entropy, hot-plugged vCPUs
   * online: clone-init). Under TCG every guest exec costs a few hundred ms, so by default
   * ('first-exec') the start returns once the guest agent answers and clone-init is left to the
   * first command the caller runs (RunningClone.pendingInit). 'clone-init': run it before
   * returning. 'none': never; the caller gives the clone its identity itself (virtual clusters
   * do it in the same exec as the network identity).
   */
  init?: 'first-exec' | 'clone-init' | 'none';
  // With 'none', vCPUs hot-plugged for ncpus stay offline until the caller puts them online.
}

/** A running clone, lent to a caller under the clone's lock (withClone). */
export interface LiveCloneAccess {
  readonly handle: CloneRef;
  readonly paths: ClonePaths;
  readonly vm: VmProcess;
  readonly agent: AgentClient;
}

/** Milliseconds from the start of a clone to each step (for benchmarks and diagnostics). */
export interface CloneTimings {
  /** qcow2 overlay made, channel opened. */
  overlay?: number;
  /** QEMU spawned and its QMP answering. */
  qmp?: number;
  /** Device state loaded (and vCPUs and DIMMs plugged). */
  restored?: number;
  /** vCPUs running. */
  running?: number;
  /** Guest agent answered a sync. */
  agent?: number;
  /** The clone is returned to the caller (clone-init done if it ran in the start). */
  ready?: number;
}

/** A clone this process runs. */
export interface RunningClone extends LiveCloneAccess {
  /** Guest commands run so far (names their files). */
  execs: number;
  destroyed: boolean;
  timings: CloneTimings;
  /** The hostname clone-init still has to give it, in the next command (init 'first-exec'). */
  pendingInit?: string;
}

/** <clone>/clone.json. */
export interface CloneRecord extends CloneRef {
  version: 1;
  createdAt: number;
}

/**
 * Per-VM API channels (GuestChannels of headnodes/types has this shape): the host socket
 * QEMU forwards the guest's API connections to.
 */
export interface VmChannels {
  open(identity: { vmId: string; kind: 'headnode' | 'clone'; headnode: string; owner: string; group: string }): Promise<string>;
  close(vmId: string): Promise<void>;
}
