import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { copyFile, mkdir, open, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { NotFoundError } from '../../errors.js';
import type {
  CloneHandle,
  CloneOptions,
  Driver,
  EnterResult,
  EnterSpec,
  ExecResult,
  ExecSpec,
  KillSignal,
  OutputStream,
  PackedStageOut,
  PeekResult,
  RunningCommand,
  SnapshotInfo,
} from '../driver.js';
import type { StageOutRequest, StageOutResult } from '../../stageout/types.js';
import { readHostFileAt } from '../read-at.js';
import { constants } from 'node:os';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';

/**
 * TEST DOUBLE for scheduler unit tests. It snapshots nothing and runs commands as host
 * processes; "delivering" a file copies it under `deliverRoot/<headnode>/`. It exists so
 * scheduler logic (walltime, signals, quotas, crash recovery) is tested fast; the product
 * driver is drivers/qemu and every feature is also tested with it.
 */
export interface FakeDriverOptions {
  deliverRoot: string;
  /** Headnodes that "exist"; snapshot of any other name fails like a missing headnode. */
  headnodes: Set<string>;
  /** The incarnation of each headnode (headnodes/incarnation.ts); a test re-creates one by changing it. */
  incarnations?: Map<string, string>;
  /** Snapshots persist here as marker files, as the QEMU driver's do, so they survive a gcd restart. */
  snapshotDir?: string;
  snapshotDelayMs?: number;
  /** Commands "run" without a process and exit 0 at once (dispatch benchmarks). */
  instant?: boolean;
  cloneDelayMs?: number;
}

/** What a fake snapshot counts for snapshot_bytes: its 512 MiB of "RAM". */
export const FAKE_SNAPSHOT_BYTES = 512 * 1024 * 1024;

export class FakeDriver implements Driver {
  readonly name = 'fake';
  readonly snapshots = new Set<string>();
  readonly clones = new Map<string, CloneHandle>();
  private readonly procs = new Map<string, ChildProcess>();
  /** Stage-outs asked for, in order (the fake runs commands on the host: nothing to copy). */
  readonly stageOuts: Array<{ cloneId: string; req: StageOutRequest; at: number }> = [];
  /** Each clone's job output files (host files here: peek reads them as they grow). */
  private readonly outputs = new Map<string, { stdout: string; stderr: string }>();

  constructor(private readonly opts: FakeDriverOptions) {
    if (opts.snapshotDir) {
      mkdirSync(opts.snapshotDir, { recursive: true });
      for (const f of readdirSync(opts.snapshotDir)) this.snapshots.add(f);
    }
  }

  async snapshot(headnode: string): Promise<SnapshotInfo> {
    if (!this.opts.headnodes.has(headnode)) throw new NotFoundError(`unknown headnode ${headnode}`);
    if (this.opts.snapshotDelayMs) await new Promise((r) => setTimeout(r, this.opts.snapshotDelayMs));
    const id = `fake-${randomUUID()}`;
    this.snapshots.add(id);
    if (this.opts.snapshotDir) writeFileSync(join(this.opts.snapshotDir, id), headnode);
    const incarnation = this.opts.incarnations?.get(headnode);
    return {
      id,
      headnode,
      ...(incarnation !== undefined ? { incarnation } : {}),
      bytes: FAKE_SNAPSHOT_BYTES,
      createdAt: Date.now(),
      pauseMs: 0,
      memMiB: 512,
      vcpus: 1,
      maxVcpus: 8,
      maxMemMiB: 16_384,
    };
  }

  async headnodeIncarnation(headnode: string): Promise<string | undefined> {
    return this.opts.headnodes.has(headnode) ? this.opts.incarnations?.get(headnode) : undefined;
  }

  async snapshotBytes(snapshotId: string): Promise<number | undefined> {
    return this.snapshots.has(snapshotId) ? FAKE_SNAPSHOT_BYTES : undefined;
  }

  async releaseSnapshot(snapshotId: string): Promise<void> {
    this.snapshots.delete(snapshotId);
    if (this.opts.snapshotDir) rmSync(join(this.opts.snapshotDir, snapshotId), { force: true });
  }

  async clone(o: CloneOptions): Promise<CloneHandle> {
    if (!this.snapshots.has(o.snapshotId)) throw new NotFoundError(`snapshot ${o.snapshotId} is gone`);
    if (this.opts.cloneDelayMs) await new Promise((r) => setTimeout(r, this.opts.cloneDelayMs));
    const h: CloneHandle = { cloneId: o.cloneId, snapshotId: o.snapshotId, headnode: 'fake' };
    this.clones.set(o.cloneId, h);
    return h;
  }

  async exec(clone: CloneHandle, spec: ExecSpec): Promise<RunningCommand> {
    if (this.opts.instant) return { done: Promise.resolve({ exitCode: 0, signal: null }), kill: async () => undefined };
    const out = await open(spec.stdoutFile, 'a');
    const err = spec.stderrFile === spec.stdoutFile ? out : await open(spec.stderrFile, 'a');
    const argv = spec.script !== undefined ? ['/bin/sh', '-c', spec.script, 'job', ...(spec.scriptArgs ?? [])] : spec.argv;
    // Like job clones, commands die with gcd (pdeathsig), so a killed gcd leaves nothing running.
    const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', ...argv], {
      cwd: spec.cwd,
      env: spec.env,
      stdio: ['ignore', out.fd, err.fd],
      detached: true, // own process group, like the guest wrapper, so kill reaches children
    });
    this.procs.set(clone.cloneId, child);
    this.outputs.set(clone.cloneId, { stdout: spec.stdoutFile, stderr: spec.stderrFile });
    const done = new Promise<ExecResult>((resolve) => {
      const finish = (r: ExecResult): void => {
        void out.close().catch(() => undefined);
        if (err !== out) void err.close().catch(() => undefined);
        resolve(r);
      };
      child.on('error', (e) => {
        void out.write(`${e.message}\n`).finally(() => finish({ exitCode: 127, signal: null }));
      });
      child.on('exit', (code, sig) => {
        finish({ exitCode: code, signal: sig ? constants.signals[sig] : null });
      });
    });
    return {
      done,
      kill: async (s: KillSignal) => {
        if (child.pid) {
          try {
            process.kill(-child.pid, `SIG${s}`);
          } catch {
            // already gone
          }
        }
      },
    };
  }

  /** The double of a paused VM: the whole process group stopped (SIGSTOP), then continued. */
  async pause(cloneId: string): Promise<void> {
    this.signalGroup(cloneId, 'SIGSTOP');
  }

  async resume(cloneId: string): Promise<void> {
    this.signalGroup(cloneId, 'SIGCONT');
  }

  private signalGroup(cloneId: string, sig: NodeJS.Signals): void {
    const p = this.procs.get(cloneId);
    if (!p?.pid || p.exitCode !== null) return;
    try {
      process.kill(-p.pid, sig);
    } catch {
      // already gone
    }
  }

  async peek(cloneId: string, stream: OutputStream, offset: number, maxBytes: number): Promise<PeekResult> {
    if (!this.clones.has(cloneId)) throw new NotFoundError(`no running clone '${cloneId}'`);
    const o = this.outputs.get(cloneId);
    if (!o) return { data: Buffer.alloc(0), next: offset, started: false };
    const data = (await readHostFileAt(o[stream], offset, maxBytes)) ?? Buffer.alloc(0);
    return { data, next: offset + data.length, started: true };
  }

  /** Runs the command as a host process in spec.cwd (the account is not switched here). */
  async enter(cloneId: string, spec: EnterSpec): Promise<EnterResult> {
    if (!this.clones.has(cloneId)) throw new NotFoundError(`no running clone '${cloneId}'`);
    return new Promise((resolve) => {
      const child = spawn(spec.argv[0] ?? 'true', spec.argv.slice(1), { cwd: spec.cwd, env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => err.push(d));
      child.on('error', (e) => resolve({ exitCode: 127, signal: null, stdout: Buffer.alloc(0), stderr: Buffer.from(`${e.message}\n`) }));
      child.on('close', (code, sig) =>
        resolve({ exitCode: code, signal: sig ? constants.signals[sig] : null, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }),
      );
    });
  }

  async destroy(cloneId: string): Promise<void> {
    this.outputs.delete(cloneId);
    const p = this.procs.get(cloneId);
    if (p?.pid && p.exitCode === null) {
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    this.procs.delete(cloneId);
    this.clones.delete(cloneId);
  }

  async stageOut(clone: CloneHandle, req: StageOutRequest): Promise<StageOutResult> {
    this.stageOuts.push({ cloneId: clone.cloneId, req, at: Date.now() });
    return { placed: 0, bytes: 0, conflicts: [], conflictCount: 0, errors: [] };
  }

  /** The fake's "archive": a small file naming the request (its bytes are what a relay must carry). */
  async packStageOut(clone: CloneHandle, req: StageOutRequest, hostArchive: string): Promise<PackedStageOut> {
    this.stageOuts.push({ cloneId: clone.cloneId, req, at: Date.now() });
    const body = Buffer.from(`fake archive of ${clone.cloneId} for ${req.jobId}: ${req.paths.join(' ')}\n`);
    writeFileSync(hostArchive, body, { mode: 0o600 });
    return { result: { placed: 0, bytes: 0, conflicts: [], conflictCount: 0, errors: [] }, archiveBytes: body.length };
  }

  /** "Places" an archive: copies it to `deliverRoot/<headnode>/.stageout/<jobId>.tar`. */
  async placeStageOut(req: StageOutRequest, _snapshotId: string, hostArchive: string): Promise<StageOutResult> {
    const dest = join(this.opts.deliverRoot, req.headnode, '.stageout', `${req.jobId}.tar`);
    await mkdir(dirname(dest), { recursive: true });
    await copyFile(hostArchive, dest);
    return { placed: 1, bytes: (await stat(dest)).size, conflicts: [], conflictCount: 0, errors: [] };
  }

  async deliverFile(headnode: string, guestPath: string, hostFile: string): Promise<void> {
    const dest = join(this.opts.deliverRoot, headnode, guestPath);
    await mkdir(dirname(dest), { recursive: true });
    await copyFile(hostFile, dest);
  }

  async sweep(keep: ReadonlySet<string>): Promise<string[]> {
    const gone = [...this.clones.keys()].filter((c) => !keep.has(c));
    for (const c of gone) await this.destroy(c);
    return gone;
  }

  async listSnapshots(): Promise<string[]> {
    return [...this.snapshots];
  }

  async close(): Promise<void> {
    for (const c of [...this.clones.keys()]) await this.destroy(c);
  }
}
