import type { SignalName } from './signals.js';

/**
 * The seam between the scheduler and virtualization. The scheduler decides what runs
 * when; a driver knows how to freeze a headnode, fork it, run a command in the fork and
 * throw the fork away. The product's driver is QEMU (drivers/qemu); drivers/fake is a
 * test double for scheduler unit tests only.
 */

import type { StageOutRequest, StageOutResult } from '../stageout/types.js';

export interface SnapshotInfo {
  /** Unique id; the driver owns the files behind it. */
  id: string;
  headnode: string;
  /** The headnode's incarnation when it was taken (headnodes/incarnation.ts), if the driver knows it. */
  incarnation?: string;
  createdAt: number;
  /** Bytes it holds on the host (disk layer and RAM file), for snapshot_bytes; absent if unknown. */
  bytes?: number;
  /** How long the headnode was paused to take it. */
  pauseMs: number;
  /** The frozen VM's RAM and vCPUs: a clone has exactly these (migration needs the same layout). */
  memMiB?: number;
  vcpus?: number;
  /** The most vCPUs a clone of it can have (hot-plugged); vcpus when it cannot grow. */
  maxVcpus?: number;
  /** The most RAM (MiB) a clone of it can have (DIMMs hot-plugged); memMiB when it cannot grow. */
  maxMemMiB?: number;
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
  /**
   * RAM (MiB) for the clone: above the snapshot's, the rest is hot-plugged (up to its
   * maxMemMiB); at or below it, the clone has the snapshot's (forked memory is never taken away).
   */
  memMiB?: number;
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
  /**
   * An interactive job (-I): argv (empty: the account's login shell) runs on a pseudo-terminal
   * of this size, which jobTerminal() reads and types into; the command's status is the job's.
   */
  terminal?: { rows: number; cols: number };
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

/** A signal by name (drivers/signals.ts): gcqsig sends any of them, walltime and gcqdel TERM and KILL. */
export type KillSignal = SignalName;

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

/** Which output file of a running job to read (gcqpeek; -e: stderr). */
export type OutputStream = 'stdout' | 'stderr';

/** Bytes of a running job's output from an offset (drivers/peek: see there). */
export interface PeekResult {
  data: Buffer;
  /** Offset just after `data`: the next call's offset. */
  next: number;
  /** False when the job's command has not started yet (no output file to read). */
  started: boolean;
}

/** A command run beside a job in its clone (gcqexec), as the job's account in its directory. */
export interface EnterSpec {
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  user: string;
}

export interface EnterResult {
  exitCode: number | null;
  signal: number | null;
  stdout: Buffer;
  stderr: Buffer;
}

/** A login shell beside a job, on a pseudo-terminal in its clone (gcqexec ID alone). */
export interface TerminalSpec extends EnterSpec {
  rows: number;
  cols: number;
}

export interface TerminalRound {
  /** What the terminal printed since the last round. */
  output: Buffer;
  /** Set once the shell has ended (its exit status, 128+N for signal N). */
  exitCode?: number;
}

export interface TerminalSession {
  /** Send keystrokes (may be empty) and take what was printed since the last round. */
  round(input: Buffer): Promise<TerminalRound>;
  /** End the shell (its session gets SIGHUP) and remove its files. Idempotent. */
  close(): Promise<void>;
}

/** An interactive job's own terminal (ExecSpec.terminal), for its submitter to attach to. */
export interface JobTerminal {
  /** Up to maxBytes of what the terminal printed, from `offset`; undefined until it is there. */
  read(offset: number, maxBytes: number): Promise<Buffer | undefined>;
  /** Bytes printed so far: a client that attaches again starts near the end. */
  size(): Promise<number>;
  /** Keystrokes for the command. */
  write(data: Buffer): Promise<void>;
}

/** The clone half of a stage-out on a compute node: the archive for the headnode, as a host file. */
export interface PackedStageOut {
  /** Excess kept on this host, pack timings; placed/conflicts are the headnode half's. */
  result: StageOutResult;
  /** Size of the archive written (0: nothing to place, no file written). */
  archiveBytes: number;
}

export interface Driver {
  readonly name: string;
  /** A grid's compute node that runs these clones: notes of files kept here name it (src/grid). */
  readonly nodeName?: string;
  /** Up to maxBytes of the running job's stdout or stderr in this clone, from `offset`. */
  peek?(cloneId: string, stream: OutputStream, offset: number, maxBytes: number): Promise<PeekResult>;
  /** Run a command to its end in a clone whose job runs (gcqexec); its output captured. */
  enter?(cloneId: string, spec: EnterSpec): Promise<EnterResult>;
  /** Start a login shell on a pseudo-terminal in a clone whose job runs. */
  openTerminal?(cloneId: string, spec: TerminalSpec): Promise<TerminalSession>;
  /** The terminal of an interactive job's command in this clone; undefined when it has none (yet). */
  jobTerminal?(cloneId: string): JobTerminal | undefined;
  /** What the clone has used so far; read just before it is destroyed. */
  usage?(cloneId: string): Promise<CloneUsage | undefined>;
  /**
   * The incarnation of the headnode running under this name now (headnodes/incarnation.ts);
   * undefined when none runs. Jobs made in another life of the name must not touch it.
   */
  headnodeIncarnation?(headnode: string): Promise<string | undefined>;
  /** Freeze the headnode's memory and disk as they are now; the headnode runs on. */
  snapshot(headnode: string): Promise<SnapshotInfo>;
  /** Bytes a snapshot holds on the host (disk and tmpfs); undefined when it is gone or unknown. */
  snapshotBytes?(snapshotId: string): Promise<number | undefined>;
  /**
   * Delete a snapshot's files; called when the last job using it has ended (`jobId`: that job,
   * which a compute node's driver names to the server).
   */
  releaseSnapshot(snapshotId: string, jobId?: string): Promise<void>;
  clone(opts: CloneOptions): Promise<CloneHandle>;
  exec(clone: CloneHandle, spec: ExecSpec): Promise<RunningCommand>;
  /**
   * gcqsig -s suspend: freeze the clone's VM (vCPUs stopped; QMP `stop`), and resume: let it
   * run on (`cont`). While paused the driver does not talk to the guest.
   */
  pause?(cloneId: string): Promise<void>;
  resume?(cloneId: string): Promise<void>;
  /** Kill the clone's VM and delete every per-clone file. Idempotent. */
  destroy(cloneId: string): Promise<void>;
  /**
   * Bring home what the job wrote: files under req.paths created or changed in the clone are
   * written into its headnode (see src/stageout/). Called after the command ended, before destroy.
   */
  stageOut(clone: CloneHandle, req: StageOutRequest): Promise<StageOutResult>;
  /**
   * The two halves of stageOut apart, for a job on a compute node (src/grid): the node packs into
   * `hostArchive`, the archive travels to the server, which places it into the headnode.
   */
  packStageOut?(clone: CloneHandle, req: StageOutRequest, hostArchive: string): Promise<PackedStageOut>;
  placeStageOut?(req: StageOutRequest, snapshotId: string, hostArchive: string): Promise<StageOutResult>;
  /**
   * Write a host file into the headnode at guestPath, owned by `owner`. `jobId` names the job
   * whose output it is (a compute node's driver relays it to the server, which checks the job).
   */
  deliverFile(headnode: string, guestPath: string, hostFile: string, owner: string, jobId?: string): Promise<void>;
  /** Destroy every clone the driver knows of that is not in `keep`; used after a crash. */
  sweep(keep: ReadonlySet<string>): Promise<string[]>;
  /** Snapshots that exist on disk, for reconciling reference counts after a crash. */
  listSnapshots(): Promise<string[]>;
  close(): Promise<void>;
}
