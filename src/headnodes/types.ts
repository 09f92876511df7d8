/** A user's virtual headnode: a long-lived VM the user is root in. */
import type { Accel } from '../vm/accel.js';
import type { SshAccessInfo } from './ssh-access.js';

export type { Accel };
export type HeadnodeState = 'stopped' | 'starting' | 'running' | 'crashed';

export interface HeadnodeSpec {
  name: string;
  owner: string;
  group: string;
  memMiB: number;
  vcpus: number;
  /**
   * The most vCPUs a clone of this headnode may have (`-l ncpus`): QEMU's -smp maxcpus. Clones
   * get the extra CPUs hot-plugged. Fixed when the headnode boots (the snapshot's layout);
   * default DEFAULT_MAX_VCPUS or vcpus, whichever is more; absent in old records: vcpus.
   */
  maxVcpus?: number;
  /**
   * The most RAM (MiB) a clone of this headnode may have (`-l mem`): QEMU's -m maxmem, with
   * DEFAULT_MEM_SLOTS DIMM slots. Clones get memory above memMiB hot-plugged. Fixed when the
   * headnode boots (the snapshot's layout); default the host's clone capacity
   * (GC_CAPACITY_MEM_MIB), set at create, or at the first boot of a headnode created before.
   */
  maxMemMiB?: number;
  diskGiB: number;
  /** A user-supplied qcow2 image; default: the project-built Debian image. */
  image?: string;
  /** Kernel and initrd for images that do not carry their own boot loader. */
  kernel?: string;
  initrd?: string;
  /** The owner's SSH public key lines (ssh-keys.ts checked them): may log in as root and as the owner. */
  sshKeys?: string[];
}

export interface HeadnodeInfo extends HeadnodeSpec {
  state: HeadnodeState;
  accel: Accel;
  pid?: number;
  createdAt: number;
  /** Which life of this name (headnodes/incarnation.ts). */
  incarnation?: string;
  startedAt?: number;
  /** Why the headnode is crashed or failed to start. */
  reason?: string;
  /** How to reach it by SSH (its port on GC_SSH_ADDR, its host key) and whose keys it takes. */
  ssh?: SshAccessInfo;
}

/** Who is speaking on a guest channel, known from the channel itself, never from the guest. */
export interface GuestIdentity {
  /** The VM the channel belongs to: a headnode name or a clone id. */
  vmId: string;
  kind: 'headnode' | 'clone';
  headnode: string;
  owner: string;
  group: string;
}

/**
 * Per-VM API channels. gcd listens on one Unix socket per VM; QEMU forwards the guest's
 * connections to 10.0.2.100:80 there (user networking guestfwd), so the socket a request
 * arrives on says which VM sent it.
 */
export interface GuestChannels {
  /** Start listening for this VM; returns the host socket path QEMU must forward to. Idempotent. */
  open(identity: GuestIdentity): Promise<string>;
  close(vmId: string): Promise<void>;
}

export interface HeadnodeManager {
  create(spec: HeadnodeSpec): Promise<HeadnodeInfo>;
  start(name: string): Promise<HeadnodeInfo>;
  stop(name: string): Promise<HeadnodeInfo>;
  destroy(name: string): Promise<void>;
  list(): Promise<HeadnodeInfo[]>;
  get(name: string): Promise<HeadnodeInfo>;
  /**
   * Change the SSH keys of a headnode: `update` gets the current key lines and returns the new
   * ones. A running headnode takes them at once, a stopped one at its next boot.
   */
  setSshKeys?(name: string, update: (keys: readonly string[]) => string[]): Promise<HeadnodeInfo>;
  /** After a gcd restart: reconnect to headnodes still running, mark dead ones crashed. */
  reattach(): Promise<void>;
  close(): Promise<void>;
}

/** The guest-side address of the gcd API (QEMU user networking forwards it per VM). */
export const GUEST_API_ADDR = { host: '10.0.2.100', port: 80 } as const;
