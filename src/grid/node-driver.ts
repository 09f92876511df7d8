/**
 * The job driver of a compute node (`gcd --node`): the local driver (QemuDriver) runs the clones,
 * a snapshot cache brings their snapshots to this host, and what must reach a headnode (job
 * output, stage-out archives, the release of a snapshot) is relayed to the server's node API.
 * A node has no headnodes: it cannot take snapshots.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  CloneHandle,
  CloneOptions,
  CloneUsage,
  Driver,
  EnterResult,
  EnterSpec,
  ExecSpec,
  OutputStream,
  PeekResult,
  RunningCommand,
  SnapshotInfo,
  TerminalSession,
  TerminalSpec,
} from '../drivers/driver.js';
import { StateError, UsageError } from '../errors.js';
import { log } from '../log.js';
import type { StageOutRequest, StageOutResult } from '../stageout/types.js';
import type { NodeApiClient } from './node-api-client.js';

/** A node has no headnodes: snapshots are the server's. */
export class NoHeadnodesError extends StateError {
  constructor(readonly node: string) {
    super(`compute node ${node} has no headnodes: snapshots are taken on the server`);
  }
}

/** The per-host snapshot cache (grid-snapshots' SnapshotCache, GRID.md). */
export interface SnapshotCacheLike {
  /** The snapshot in this host's snapshot folder (same layout as vm/snapshots), held for `holder`. */
  acquire(snapshotId: string, holder: string): Promise<string>;
  release(snapshotId: string, holder: string): Promise<void>;
}

export interface NodeDriverOptions {
  /** This node's registry name. */
  node: string;
  /** The local driver that runs clones (QemuDriver; the test double in tests). */
  inner: Driver;
  cache: SnapshotCacheLike;
  server: Pick<NodeApiClient, 'deliverOutput' | 'placeStageOut' | 'releaseSnapshot'>;
  /** Folder for archives on their way to the server (`$GC_STATE_DIR/grid/outgoing`). */
  outgoingDir: string;
}

export class NodeDriver implements Driver {
  readonly name: string;
  readonly nodeName: string;
  /** Clones running here and the snapshot each holds in the cache. */
  private readonly held = new Map<string, string>();

  constructor(private readonly o: NodeDriverOptions) {
    this.name = `node(${o.inner.name})`;
    this.nodeName = o.node;
  }

  snapshot(): Promise<SnapshotInfo> {
    return Promise.reject(new NoHeadnodesError(this.o.node));
  }

  /**
   * The last job of a snapshot ended here: the server frees it (it checks the job ran here and
   * no job holds the snapshot). Without a job nothing is sent: the server's start reconciles.
   */
  async releaseSnapshot(snapshotId: string, jobId?: string): Promise<void> {
    if (jobId === undefined) {
      log.warn('snapshot release without its job: left to the server', { snapshot: snapshotId });
      return;
    }
    await this.o.server.releaseSnapshot(snapshotId, jobId);
  }

  async clone(opts: CloneOptions): Promise<CloneHandle> {
    await this.o.cache.acquire(opts.snapshotId, opts.cloneId);
    this.held.set(opts.cloneId, opts.snapshotId);
    try {
      return await this.o.inner.clone(opts);
    } catch (e) {
      this.held.delete(opts.cloneId);
      await this.o.cache.release(opts.snapshotId, opts.cloneId).catch(() => undefined);
      throw e;
    }
  }

  async destroy(cloneId: string): Promise<void> {
    try {
      await this.o.inner.destroy(cloneId);
    } finally {
      const snap = this.held.get(cloneId);
      if (snap !== undefined) {
        this.held.delete(cloneId);
        await this.o.cache.release(snap, cloneId).catch((e: unknown) => log.warn('snapshot cache release failed', { snapshot: snap, error: String(e) }));
      }
    }
  }

  exec(clone: CloneHandle, spec: ExecSpec): Promise<RunningCommand> {
    return this.o.inner.exec(clone, spec);
  }

  /** Pack in the clone here, send the archive to the server, which places it into the headnode. */
  async stageOut(clone: CloneHandle, req: StageOutRequest): Promise<StageOutResult> {
    const inner = this.o.inner;
    if (!inner.packStageOut) throw new StateError(`the ${inner.name} driver cannot pack a stage-out for the server`);
    await mkdir(this.o.outgoingDir, { recursive: true, mode: 0o700 });
    const archive = join(this.o.outgoingDir, `${clone.cloneId}.${randomBytes(4).toString('hex')}.tar`);
    try {
      const packed = await inner.packStageOut(clone, req, archive);
      const { archiveBytes } = packed;
      // What went past the cap stays on this node (req.keepDir is here): the note names it.
      const result = packed.result.excess?.keptAt ? { ...packed.result, excess: { ...packed.result.excess, keptOn: this.o.node } } : packed.result;
      if (archiveBytes === 0) return result;
      const placed = await this.o.server.placeStageOut(req.jobId, archive);
      return {
        ...result,
        placed: placed.placed,
        bytes: placed.bytes,
        conflicts: placed.conflicts,
        conflictCount: placed.conflictCount,
        errors: [...result.errors, ...placed.errors],
        timingsMs: { ...result.timingsMs, ...(placed.timingsMs?.place !== undefined ? { place: placed.timingsMs.place } : {}) },
      };
    } finally {
      await rm(archive, { force: true });
    }
  }

  /** Output goes to the server, named by its job: the server checks the path is that job's. */
  async deliverFile(_headnode: string, guestPath: string, hostFile: string, _owner: string, jobId?: string): Promise<void> {
    if (jobId === undefined) throw new UsageError('a compute node delivers only a job’s own output (no job id given)');
    await this.o.server.deliverOutput(jobId, guestPath, hostFile);
  }

  peek(cloneId: string, stream: OutputStream, offset: number, maxBytes: number): Promise<PeekResult> {
    if (!this.o.inner.peek) return Promise.reject(new StateError(`the ${this.o.inner.name} driver cannot read running output`));
    return this.o.inner.peek(cloneId, stream, offset, maxBytes);
  }

  enter(cloneId: string, spec: EnterSpec): Promise<EnterResult> {
    if (!this.o.inner.enter) return Promise.reject(new StateError(`the ${this.o.inner.name} driver cannot run commands beside a job`));
    return this.o.inner.enter(cloneId, spec);
  }

  openTerminal(cloneId: string, spec: TerminalSpec): Promise<TerminalSession> {
    if (!this.o.inner.openTerminal) return Promise.reject(new StateError(`the ${this.o.inner.name} driver cannot open terminals`));
    return this.o.inner.openTerminal(cloneId, spec);
  }

  async usage(cloneId: string): Promise<CloneUsage | undefined> {
    return this.o.inner.usage?.(cloneId);
  }

  pause(cloneId: string): Promise<void> {
    if (!this.o.inner.pause) return Promise.reject(new StateError(`the ${this.o.inner.name} driver cannot suspend jobs`));
    return this.o.inner.pause(cloneId);
  }

  resume(cloneId: string): Promise<void> {
    if (!this.o.inner.resume) return Promise.reject(new StateError(`the ${this.o.inner.name} driver cannot resume jobs`));
    return this.o.inner.resume(cloneId);
  }

  /** Clones not in `keep` are destroyed (and their cache holds dropped). */
  async sweep(keep: ReadonlySet<string>): Promise<string[]> {
    const gone = await this.o.inner.sweep(keep);
    for (const c of gone) {
      const snap = this.held.get(c);
      if (snap !== undefined) {
        this.held.delete(c);
        await this.o.cache.release(snap, c).catch(() => undefined);
      }
    }
    return gone;
  }

  /** Snapshots are the server's: a node reconciles none (its cache sweeps its own). */
  async listSnapshots(): Promise<string[]> {
    return [];
  }

  async close(): Promise<void> {
    await this.o.inner.close();
  }
}
