/**
 * The server's node API (GC_NODE_API_ADDR): what a compute node asks of the server for the
 * jobs it runs. Every request names the node and carries its token (node-tokens.ts); a node acts
 * only as a node, and only on a job whose record says it runs there (execHost = that node,
 * state R or E). Routes (docs/PROTOCOL.md, "Node API"):
 *   PUT  /node/v1/jobs/:id/output?path=P     a job's output file, written into its headnode at P
 *   PUT  /node/v1/jobs/:id/stageout          a stage-out archive, placed into its headnode
 *   POST /node/v1/snapshots/:id/release?job=J  the last job (J) of a snapshot ended on the node
 *   POST /node/v1/jobs/:id/dependents        the job ended (F) on the node: the server reviews its
 *                                            dependents (an afterok job runs in a fresh snapshot)
 *   *    /node/v1/clones/:clone/api/...      a clone's guest-channel request, answered as that guest
 * There is no route to /v1/cli or any user API: a node cannot submit or act as a user.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { sendJson } from '../api/http-util.js';
import { closeGracefully } from '../api/close-server.js';
import type { Driver } from '../drivers/driver.js';
import { NotFoundError, PermissionError, StateError, UnavailableError, UsageError } from '../errors.js';
import { log } from '../log.js';
import type { JobRecord } from '../queue/job.js';
import type { JobStore } from '../queue/job-store.js';
import type { Actor } from '../scheduler/actor.js';
import { defaultOutputPaths } from '../scheduler/output-paths.js';
import { archiveBound } from '../drivers/qemu/stage-out-common.js';
import { stageOutLimits, stageOutRequest, type StageOutLimits } from '../stageout/policy.js';
import { NO_STAGE_OUT } from '../stageout/types.js';
import { jobIdOfClone } from './clone-job.js';
import { receiveToFile } from './http-body.js';
import { decodePathPart, listenForRoutes } from './node-listener.js';
import { presentedCredentials, type NodeTokens } from './node-tokens.js';

/** The same handler the local guest channels use (ApiServer.handle). */
export type GuestApiHandler = (req: IncomingMessage, res: ServerResponse, actor: Actor) => void;

export class NodeAuthError extends PermissionError {}

export interface NodeApiOptions {
  /** host:port to listen on (GC_NODE_API_ADDR); port 0 picks one (tests). */
  addr: string;
  tokens: NodeTokens;
  store: Pick<JobStore, 'tryGet' | 'parseId' | 'serverName' | 'snapshotRefs'>;
  /** The server's driver: it writes into headnodes. */
  driver: Pick<Driver, 'deliverFile' | 'placeStageOut' | 'releaseSnapshot'>;
  /** The guest API; undefined while gcd starts (answered 503 as on the local channels). */
  guestApi: () => GuestApiHandler | undefined;
  /** Folder for bodies on their way into a headnode (`$GC_STATE_DIR/grid/incoming`). */
  incomingDir: string;
  /** Where a relayed stage-out keeps what a headnode could not take (as the local runner does). */
  undeliveredDir: string;
  /** Most bytes of one output stream (GC_MAX_OUTPUT_MIB): the cap the node applied. */
  maxOutputBytes: number;
  /** Scheduler.reviewDependentsOf: release or cancel the jobs waiting on a job a node ended. */
  dependents?: (job: JobRecord) => Promise<void>;
  /** Stage-out caps; default from GC_STAGEOUT_MAX / GC_STAGEOUT_KEEP_MAX. */
  stageOutLimits?: () => StageOutLimits;
}

/** States in which a node may still bring a job's results home or speak for its clone. */
const LIVE: ReadonlySet<string> = new Set(['R', 'E']);

export class NodeApi {
  private server: Server | undefined;

  constructor(private readonly o: NodeApiOptions) {}

  async listen(): Promise<string> {
    await mkdir(this.o.incomingDir, { recursive: true, mode: 0o700 });
    const { server, url } = await listenForRoutes(this.o.addr, 'node API', (req, res) => this.route(req, res));
    this.server = server;
    log.info('node API listening', { url });
    return url;
  }

  async close(): Promise<void> {
    if (this.server) await closeGracefully(this.server);
    this.server = undefined;
  }

  /** The calling node's name, once its token checks out. */
  private async authenticate(req: IncomingMessage): Promise<string> {
    const c = presentedCredentials(req.headers);
    if (!c || !(await this.o.tokens.verify(c.name, c.token))) throw new NodeAuthError('node API: unknown node or wrong token');
    return c.name;
  }

  /** The job, if it runs on `node` now; one refusal for unknown, elsewhere and ended (ids do not leak). */
  private async jobOn(node: string, idText: string): Promise<JobRecord> {
    let job: JobRecord | undefined;
    try {
      job = await this.o.store.tryGet(this.o.store.parseId(idText));
    } catch {
      job = undefined;
    }
    if (!job || job.execHost !== node || !LIVE.has(job.state)) {
      throw new PermissionError(`node ${node}: job ${idText.slice(0, 80)} is not running on this node`);
    }
    return job;
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const node = await this.authenticate(req);
    const url = new URL(req.url ?? '/', 'http://gcd');
    const p = url.pathname;
    let m: RegExpExecArray | null;
    if ((m = /^\/node\/v1\/clones\/([^/]+)(\/api\/.*)$/.exec(p))) return this.guestCall(node, decodePathPart(m[1]), m[2] + url.search, req, res);
    if (req.method === 'PUT' && (m = /^\/node\/v1\/jobs\/([^/]+)\/output$/.exec(p))) return this.output(node, decodePathPart(m[1]), url, req, res);
    if (req.method === 'PUT' && (m = /^\/node\/v1\/jobs\/([^/]+)\/stageout$/.exec(p))) return this.stageOut(node, decodePathPart(m[1]), req, res);
    if (req.method === 'POST' && (m = /^\/node\/v1\/jobs\/([^/]+)\/dependents$/.exec(p))) return this.dependents(node, decodePathPart(m[1]), res);
    if (req.method === 'POST' && (m = /^\/node\/v1\/snapshots\/([^/]+)\/release$/.exec(p)))
      return this.releaseSnapshot(node, decodePathPart(m[1]), url.searchParams.get('job') ?? '', res);
    throw new NotFoundError(`no such node endpoint ${req.method} ${p.slice(0, 100)}`);
  }

  /** A job's stdout/stderr: only to one of the job's own output paths, as the job's account. */
  private async output(node: string, jobId: string, url: URL, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const job = await this.jobOn(node, jobId);
    const path = url.searchParams.get('path') ?? '';
    const paths = defaultOutputPaths(job);
    if (path !== paths.out && path !== paths.err) throw new PermissionError(`node ${node}: '${path.slice(0, 200)}' is not an output path of job ${job.id}`);
    const tmp = join(this.o.incomingDir, `${job.id}.${randomBytes(6).toString('hex')}.out`);
    try {
      await receiveToFile(req, tmp, this.o.maxOutputBytes + 64 * 1024);
      await this.o.driver.deliverFile(job.spec.headnode, path, tmp, job.spec.account ?? 'root', job.id);
    } finally {
      await rm(tmp, { force: true });
    }
    sendJson(res, 200, { delivered: path });
  }

  /** A stage-out archive: the request is rebuilt from the job's record, never taken from the node. */
  private async stageOut(node: string, jobId: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const job = await this.jobOn(node, jobId);
    const sr = stageOutRequest(job, (this.o.stageOutLimits ?? (() => stageOutLimits()))(), this.o.undeliveredDir);
    if (!sr) {
      req.resume();
      sendJson(res, 200, NO_STAGE_OUT);
      return;
    }
    if (!job.snapshotId) throw new StateError(`job ${job.id} has no snapshot to place its files against`);
    if (!this.o.driver.placeStageOut) throw new StateError("this server's driver cannot place relayed stage-outs");
    const tmp = join(this.o.incomingDir, `${job.id}.${randomBytes(6).toString('hex')}.tar`);
    try {
      await receiveToFile(req, tmp, archiveBound(sr.capBytes));
      sendJson(res, 200, await this.o.driver.placeStageOut(sr, job.snapshotId, tmp));
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /**
   * The snapshot of a job that ran on this node and is F, once no job holds it any more (the
   * count is in Redis): a node cannot free a snapshot in use, nor one of another node's jobs.
   */
  private async releaseSnapshot(node: string, snapshotId: string, jobId: string, res: ServerResponse): Promise<void> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(snapshotId)) throw new UsageError('invalid snapshot id');
    let job: JobRecord | undefined;
    try {
      job = await this.o.store.tryGet(this.o.store.parseId(jobId));
    } catch {
      job = undefined;
    }
    if (!job || job.execHost !== node || job.state !== 'F' || job.snapshotId !== snapshotId)
      throw new PermissionError(`node ${node}: snapshot ${snapshotId} is not that of a job that ended on this node`);
    const refs = (await this.o.store.snapshotRefs()).get(snapshotId) ?? 0;
    if (refs > 0) throw new PermissionError(`node ${node}: snapshot ${snapshotId} is still held by ${refs} job(s)`);
    await this.o.driver.releaseSnapshot(snapshotId);
    sendJson(res, 200, { released: snapshotId });
  }

  /**
   * A job that ended on this node (or an array whose task did): its dependents are reviewed
   * here, where the headnode can be snapshotted afresh. Idempotent (reviewing is), so a node
   * may ask again after a lost answer; a job still running or of another node is refused.
   */
  private async dependents(node: string, jobId: string, res: ServerResponse): Promise<void> {
    const review = this.o.dependents;
    if (!review) throw new StateError('this server reviews no dependents for nodes');
    let job: JobRecord | undefined;
    try {
      job = await this.o.store.tryGet(this.o.store.parseId(jobId));
    } catch {
      job = undefined;
    }
    const ranHere = async (j: JobRecord): Promise<boolean> => {
      if (j.execHost === node) return true;
      if (!j.array) return false;
      for (const i of j.array.indices) {
        if ((await this.o.store.tryGet(`${j.seq}[${i}].${this.o.store.serverName}`))?.execHost === node) return true;
      }
      return false;
    };
    if (!job || job.state !== 'F' || !(await ranHere(job))) throw new PermissionError(`node ${node}: job ${jobId.slice(0, 80)} did not end on this node`);
    await review(job);
    sendJson(res, 200, { reviewed: job.id });
  }

  /**
   * A request from a clone's guest channel, relayed by the node that runs the clone: answered
   * as that clone (its job's headnode and owner, from the record, not from the node), through
   * the same handler as local channels.
   */
  private async guestCall(node: string, cloneId: string, path: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const jobId = jobIdOfClone(cloneId, this.o.store.serverName);
    if (!jobId) throw new PermissionError(`node ${node}: '${cloneId.slice(0, 80)}' is not a job's clone`);
    const job = await this.jobOn(node, jobId);
    if (job.cloneId !== cloneId) throw new PermissionError(`node ${node}: clone ${cloneId} is not the running clone of job ${job.id}`);
    const api = this.o.guestApi();
    if (!api) throw new UnavailableError('gcd is starting; try again');
    const actor: Actor = {
      kind: 'guest',
      identity: { vmId: cloneId, kind: 'clone', headnode: job.spec.headnode, owner: job.spec.user, group: job.spec.group },
    };
    req.url = path.replace(/^\/api/, '');
    api(req, res, actor);
  }

  get address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }
}
