/**
 * The seam between the scheduler and virtualization. The scheduler decides what runs
 * when; a driver knows how to freeze a headnode, fork it, run a command in the fork and
 * throw the fork away. The product's driver is QEMU (drivers/qemu); drivers/fake is a
 * test double for scheduler unit tests only.
 */

export interface SnapshotInfo {
  /** Unique id; the driver owns the files behind it. */
  id: string;
  headnode: string;
  createdAt: number;
  /** How long the headnode was paused to take it. */
  pauseMs: number;
  /** The frozen VM's RAM and vCPUs: a clone has exactly these (migration needs the same layout). */
  memMiB?: number;
  vcpus?: number;
  /** The most vCPUs a clone of it can have (hot-plugged); vcpus when it cannot grow. */
  maxVcpus?: number;
}

export interface CloneOptions {
  /** Unique id chosen by the caller, e.g. `j42-0`; names the clone's files and process. */
  cloneId: string;
  snapshotId: string;
  /** Hostname the clone takes before the command starts, e.g. `<headnode>-<jobid>`. */
  hostname: string;
  /**
   * vCPUs for the clone: more than the snapshot's are hot-plugged (up to its maxVcpus), fewer
   * are unplugged. Undefined: the snapshot's own.
   */
  ncpus?: number;
}

export interface CloneHandle {
  cloneId: string;
  snapshotId: string;
  headnode: string;
}

export interface ExecSpec {
  argv: string[];
  /** When set, the script text is written into the clone and run instead of argv. */
  script?: string;
  scriptArgs?: string[];
  cwd: string;
  env: Record<string, string>;
  /** Account inside the guest that runs the command. */
  user: string;
  /** Host files the driver fills with the command's stdout and stderr (may be the same file). */
  stdoutFile: string;
  stderrFile: string;
}

export interface ExecResult {
  /** Exit code when the process exited normally. */
  exitCode: number | null;
  /** Signal number when the process was killed by a signal. */
  signal: number | null;
  /** What went wrong bringing the result home (output cut at its cap), for the job's comment. */
  note?: string;
  /** The command's own usage, measured in the guest (its cgroup), when the guest can. */
  usage?: CommandUsage;
}

/** What the command itself used inside the clone (a cgroup v2 of its own). */
export interface CommandUsage {
  cputSec: number;
  /** Peak memory of the command's cgroup (memory.peak), KiB; absent if the kernel lacks it. */
  memPeakKiB?: number;
  /** Processes of the command the OOM killer ended (memory.events oom_kill). */
  oomKills: number;
}

export type KillSignal = 'TERM' | 'KILL';

export interface RunningCommand {
  /** Resolves when the command has ended and its output is in the host files. */
  readonly done: Promise<ExecResult>;
  /** Send a signal to the command's whole process group inside the clone. */
  kill(signal: KillSignal): Promise<void>;
}

/** What a clone used, seen from the host (its VM process). */
export interface CloneUsage {
  cputSec: number;
  /** Peak resident memory of the clone beyond nothing (VmHWM). */
  memKiB: number;
}

export interface Driver {
  readonly name: string;
  /** What the clone has used so far; read just before it is destroyed. */
  usage?(cloneId: string): Promise<CloneUsage | undefined>;
  /** Freeze the headnode's memory and disk as they are now; the headnode runs on. */
  snapshot(headnode: string): Promise<SnapshotInfo>;
  /** Delete a snapshot's files; called when the last job using it has ended. */
  releaseSnapshot(snapshotId: string): Promise<void>;
  clone(opts: CloneOptions): Promise<CloneHandle>;
  exec(clone: CloneHandle, spec: ExecSpec): Promise<RunningCommand>;
  /** Kill the clone's VM and delete every per-clone file. Idempotent. */
  destroy(cloneId: string): Promise<void>;
  /** Write a host file into the headnode at guestPath, owned by `owner`. */
  deliverFile(headnode: string, guestPath: string, hostFile: string, owner: string): Promise<void>;
  /** Destroy every clone the driver knows of that is not in `keep`; used after a crash. */
  sweep(keep: ReadonlySet<string>): Promise<string[]>;
  /** Snapshots that exist on disk, for reconciling reference counts after a crash. */
  listSnapshots(): Promise<string[]>;
  close(): Promise<void>;
}
