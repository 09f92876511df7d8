/**
 * One QEMU process: spawn it, wait for its QMP socket, kill it and wait until it is gone.
 *
 * Two lifetimes:
 *  - 'job': a job clone. Spawned through `setpriv --pdeathsig SIGKILL`, so if gcd dies the
 *    kernel kills the clone at once (the job is rerun or failed by gcd's crash recovery).
 *  - 'detached': headnodes and long-lived clones. In their own session, stdio to a file,
 *    unref'd: they survive a gcd restart and are found again through their pid file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { open, readFile, rm, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { setting } from '../config/settings.js';
import { DriverError, errorMessage } from '../errors.js';
import { QmpClient } from './qmp.js';
import { setprivIds } from './vm-uid.js';
import { createVmCgroup, removeVmCgroup, vmCgroupOfPid, type VmCgroup, type VmLimits } from './vm-cgroup.js';

export const QEMU_BINARY = setting('qemuBinary');

export type VmLifetime = 'job' | 'detached';

export interface SpawnOptions {
  /** vmId, for messages and to recognise the process after a restart (`-name <vmId>,...`). */
  vmId: string;
  /** QEMU's arguments (buildVmArgs), without the binary. */
  args: string[];
  lifetime: VmLifetime;
  qmpSocket: string;
  /** QEMU's stdout and stderr go here (truncated on spawn); its tail explains a failed start. */
  logFile: string;
  pidFile: string;
  /** How long QEMU may take to open its QMP socket. */
  startTimeoutMs?: number;
  /**
   * Confine a guest's QEMU: a cgroup of its own with these limits (vm-cgroup.ts), removed
   * when it ends. Every QEMU also runs with the guests' group id (GC_VM_GID), which the host
   * firewall matches (guest-egress.ts).
   */
  cgroup?: { stateDir: string; limits: VmLimits };
  /**
   * The unprivileged uid QEMU runs as (vm-uid.ts): the VM's files must be given to it before
   * the spawn. Undefined: gcd's own uid (a VM from before uids, or gcd not root).
   */
  uid?: number;
}

export type ReattachResult = { ok: true; vm: VmProcess } | { ok: false; reason: string; pid?: number };

export class VmProcess {
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private exitPromise: Promise<void>;

  private constructor(
    readonly vmId: string,
    readonly pid: number,
    readonly qmp: QmpClient,
    private readonly child: ChildProcess | undefined,
    private readonly logFile: string | undefined,
    private readonly lifetime: VmLifetime | undefined,
    cgroup: VmCgroup | undefined,
  ) {
    if (child) {
      this.exitPromise = new Promise((resolve) => {
        const done = (code: number | null, signal: NodeJS.Signals | null): void => {
          this.exitInfo ??= { code, signal };
          resolve();
        };
        if (child.exitCode !== null || child.signalCode !== null) done(child.exitCode, child.signalCode);
        else child.once('exit', done);
      });
    } else {
      // Not our child (found again after a gcd restart): poll for it to go away.
      this.exitPromise = (async () => {
        while (pidAlive(pid, vmId)) await sleep(100);
        this.exitInfo ??= { code: null, signal: null };
      })();
    }
    // The VM's cgroup goes with it (a leftover of a gcd that died is swept at start).
    if (cgroup) this.exitPromise = this.exitPromise.then(() => removeVmCgroup(cgroup));
  }

  /** Start QEMU and connect to its QMP socket; kills it again if QMP does not come up. */
  static async spawn(opts: SpawnOptions): Promise<VmProcess> {
    await rm(opts.qmpSocket, { force: true });
    const cgroup = opts.cgroup ? await createVmCgroup(opts.cgroup.stateDir, opts.vmId, opts.cgroup.limits) : undefined;
    const log = await open(opts.logFile, 'w', 0o600).catch(async (e: unknown) => {
      if (cgroup) await removeVmCgroup(cgroup);
      throw e;
    });
    let child: ChildProcess;
    try {
      const [cmd, argv] = qemuCommand(opts, cgroup);
      child = spawn(cmd, argv, {
        stdio: ['ignore', log.fd, log.fd],
        detached: opts.lifetime === 'detached',
      });
    } finally {
      await log.close(); // the child holds its own copy of the fd
    }
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    if (opts.lifetime === 'detached') child.unref();
    let exited = false;
    child.once('exit', () => (exited = true));

    const started = Date.now();
    const deadline = started + (opts.startTimeoutMs ?? 30_000);
    try {
      const qmp = await Promise.race([
        QmpClient.connect(opts.qmpSocket, { deadline, retryMs: 5, isAlive: () => !exited && child.pid !== undefined }),
        spawnError.then((e) => {
          throw new DriverError(`cannot run ${QEMU_BINARY}: ${e.message}`, { cause: e });
        }),
      ]);
      if (child.pid === undefined) throw new DriverError(`QEMU for ${opts.vmId} has no pid`);
      // gcd writes the pid file itself (not QEMU's -pidfile): it exists exactly when spawn succeeded.
      await writePid(opts.pidFile, child.pid);
      return new VmProcess(opts.vmId, child.pid, qmp, child, opts.logFile, opts.lifetime, cgroup);
    } catch (err) {
      if (!exited) child.kill('SIGKILL');
      await new Promise<void>((r) => (exited || child.exitCode !== null ? r() : child.once('exit', () => r())));
      await rm(opts.pidFile, { force: true });
      if (cgroup) await removeVmCgroup(cgroup);
      const tail = await logTail(opts.logFile);
      throw new DriverError(`QEMU for ${opts.vmId} failed to start: ${errorMessage(err)}${tail ? ` — qemu said: ${tail}` : ''}`, { cause: err });
    }
  }

  /**
   * Find a detached QEMU again after a gcd restart: its pid file names a live process whose
   * command line is this VM's, and its QMP socket answers. Otherwise says why not.
   */
  static async reattach(vmId: string, pidFile: string, qmpSocket: string, timeoutMs = 5000): Promise<ReattachResult> {
    let pid: number;
    try {
      pid = Number.parseInt(await readFile(pidFile, 'utf8'), 10);
    } catch {
      return { ok: false, reason: 'no pid file' };
    }
    if (!Number.isInteger(pid) || pid <= 0) return { ok: false, reason: 'bad pid file' };
    if (!pidAlive(pid, vmId)) return { ok: false, reason: `QEMU (pid ${pid}) is no longer running` };
    try {
      const qmp = await QmpClient.connect(qmpSocket, { deadline: Date.now() + timeoutMs, isAlive: () => pidAlive(pid, vmId) });
      return { ok: true, vm: new VmProcess(vmId, pid, qmp, undefined, undefined, undefined, vmCgroupOfPid(pid, vmId)) };
    } catch (err) {
      return { ok: false, reason: `QEMU (pid ${pid}) is running but its QMP socket does not answer: ${errorMessage(err)}`, pid };
    }
  }

  isAlive(): boolean {
    return this.exitInfo === undefined && (this.child ? true : pidAlive(this.pid, this.vmId));
  }

  /**
   * Resolves once the process has exited (and, for our child, been reaped). Passive: does not
   * keep the event loop alive for a detached child; use waitExit() to wait actively.
   */
  get exited(): Promise<void> {
    return this.exitPromise;
  }

  /** Wait up to timeoutMs for the exit, keeping the event loop alive meanwhile; true if it exited. */
  async waitExit(timeoutMs: number): Promise<boolean> {
    if (this.exitInfo) return true;
    const detached = this.child !== undefined && this.lifetime === 'detached';
    this.child?.ref();
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.exitPromise.then(() => true),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(false), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (detached && !this.exitInfo) this.child?.unref();
    }
  }

  /** How the process ended, for messages. */
  describeExit(): string {
    if (!this.exitInfo) return 'running';
    if (this.exitInfo.signal) return `killed by ${this.exitInfo.signal}`;
    if (this.exitInfo.code !== null) return `exited with status ${this.exitInfo.code}`;
    return 'exited';
  }

  async logTail(): Promise<string> {
    return this.logFile ? logTail(this.logFile) : '';
  }

  /**
   * Stop the process: `signal` first, SIGKILL after graceMs, then wait for the exit.
   * Safe to call more than once and on a process that is already gone.
   */
  async kill(signal: NodeJS.Signals = 'SIGKILL', graceMs = 5000): Promise<void> {
    this.qmp.destroy();
    if (this.isAlive()) {
      this.signal(signal);
      if (signal !== 'SIGKILL' && !(await this.waitExit(graceMs))) this.signal('SIGKILL');
    }
    // A detached child is unref'd; while we wait for its exit it must keep the event loop alive.
    this.child?.ref();
    await this.exitPromise;
  }

  private signal(sig: NodeJS.Signals): void {
    try {
      if (this.child) this.child.kill(sig);
      else process.kill(this.pid, sig);
    } catch {
      // Already gone.
    }
  }
}

/**
 * The command that runs QEMU: `sh` joins the VM's cgroup (writing its own pid, so QEMU never
 * runs a thread outside it) and execs `setpriv`, which sets the VM's own uid (vm-uid.ts) and
 * the guests' group id (the host firewall's mark, guest-egress.ts), drops supplementary groups
 * and, for a job clone, asks for SIGKILL when gcd dies; setpriv execs QEMU: the pid gcd holds
 * is QEMU's.
 */
function qemuCommand(opts: SpawnOptions, cgroup: VmCgroup | undefined): [string, string[]] {
  const ai = opts.args.indexOf('-accel');
  const kvm = ai >= 0 && opts.args[ai + 1] === 'kvm';
  const priv = ['setpriv', ...(opts.lifetime === 'job' ? ['--pdeathsig', 'SIGKILL'] : []), ...setprivIds(opts.uid, kvm), '--', QEMU_BINARY, ...opts.args];
  if (!cgroup) return [priv[0] ?? 'setpriv', priv.slice(1)];
  const join = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"';
  return ['sh', ['-c', join, 'copper-cgroup-join', ...cgroup.procsFiles, '--', ...priv]];
}

/** True when pid is alive and is the QEMU of this VM (guards against pid reuse). */
export function pidAlive(pid: number, vmId: string): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // Synchronous but tiny (a procfs read); keeps isAlive() usable as a predicate.
    const cmdline = readFileSyncSafe(`/proc/${pid}/cmdline`);
    if (cmdline === undefined) return false;
    const args = cmdline.split('\0');
    const i = args.indexOf('-name');
    const stat = readFileSyncSafe(`/proc/${pid}/stat`);
    if (stat && / Z /.test(stat.slice(stat.lastIndexOf(')')))) return false; // zombie: exited, not yet reaped
    return i >= 0 && (args[i + 1] ?? '').split(',')[0] === vmId;
  } catch {
    return false;
  }
}

function readFileSyncSafe(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

async function writePid(path: string, pid: number): Promise<void> {
  await writeFile(path, `${pid}\n`, { mode: 0o600 });
}

async function logTail(path: string, max = 600): Promise<string> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    return text.length > max ? '…' + text.slice(-max) : text;
  } catch {
    return '';
  }
}
