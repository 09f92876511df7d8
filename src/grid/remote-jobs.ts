/**
 * The server's side of job control on a grid: gcqdel, gcqsig (signals, suspend, resume),
 * gcqrerun, gcqpeek and gcqexec of a job whose command runs on another compute host are sent to
 * that host's control listener (node-control.ts), found by the host's registry record
 * (controlUrl) and authenticated with that host's token. The caller's permission on the job
 * has been checked here, on the server, before anything is sent.
 */
import type { Driver, EnterResult, EnterSpec, OutputStream, PeekResult, TerminalRound, TerminalSession, TerminalSpec } from '../drivers/driver.js';
import type { SignalName } from '../drivers/signals.js';
import { NotFoundError, StateError, UnavailableError } from '../errors.js';
import type { JobRecord } from '../queue/job.js';
import type { JobStore } from '../queue/job-store.js';
import type { LiveJob } from '../scheduler/live-jobs.js';
import type { StopReason } from '../scheduler/runner.js';
import type { RemoteJobs } from '../scheduler/running-ops.js';
import { jobIdOfClone } from './clone-job.js';
import { callJson } from './json-http.js';
import type { NodeTokens } from './node-tokens.js';

export interface RemoteJobControlOptions {
  tokens: Pick<NodeTokens, 'get'>;
  /** A host's control URL from its registry record (`<prefix>:node:<name>` controlUrl). */
  controlUrlOf(node: string): Promise<string | undefined>;
  store: Pick<JobStore, 'tryGet' | 'serverName'>;
  /** This gcd's own host name in the registry: its jobs are controlled in-process. */
  self?: string;
  timeoutMs?: number;
}

/** What gcqpeek and gcqexec need (ToolServices.clones). */
export type CloneAccess = Pick<Driver, 'peek' | 'enter' | 'openTerminal'>;

function b64(v: unknown): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'base64') : Buffer.alloc(0);
}

function field(o: unknown, k: string): unknown {
  return typeof o === 'object' && o !== null ? (o as Record<string, unknown>)[k] : undefined;
}

export class RemoteJobControl implements RemoteJobs {
  constructor(private readonly o: RemoteJobControlOptions) {}

  /** The other host a job runs on, or undefined when it is this one's (or nobody's). */
  private elsewhere(job: JobRecord): string | undefined {
    return job.execHost !== undefined && job.execHost !== this.o.self ? job.execHost : undefined;
  }

  private async call(node: string, path: string, body: unknown): Promise<unknown> {
    const [base, token] = await Promise.all([this.o.controlUrlOf(node), this.o.tokens.get(node)]);
    if (!base) throw new StateError(`compute node ${node} has no control address in its registry record`);
    if (!token) throw new StateError(`compute node ${node} has no token on this server (gc node token ${node})`);
    return callJson({ base, method: 'POST', path, node, token, body, ...(this.o.timeoutMs !== undefined ? { timeoutMs: this.o.timeoutMs } : {}) });
  }

  async cancel(job: JobRecord, reason: StopReason): Promise<boolean> {
    const node = this.elsewhere(job);
    if (!node) return false;
    try {
      const r = await this.call(node, `/control/v1/jobs/${encodeURIComponent(job.id)}/cancel`, { reason });
      return field(r, 'cancelled') === true;
    } catch (e) {
      // gcqdel -W force of a job on a host that does not answer: the caller ends it here.
      if (reason === 'forced' && e instanceof UnavailableError) return false;
      throw e;
    }
  }

  live(job: JobRecord): LiveJob | undefined {
    const node = this.elsewhere(job);
    if (!node) return undefined;
    const send = async (signal: string): Promise<void> => void (await this.call(node, `/control/v1/jobs/${encodeURIComponent(job.id)}/signal`, { signal }));
    return { signal: (sig: SignalName) => send(sig), suspend: () => send('suspend'), resume: () => send('resume') };
  }

  /**
   * gcqpeek/gcqexec's clone access: the local driver for clones that run here, the clone's host
   * for the others (found through the clone's job record).
   */
  clones(local: CloneAccess | undefined): CloneAccess {
    const remoteNode = async (cloneId: string): Promise<string | undefined> => {
      const id = jobIdOfClone(cloneId, this.o.store.serverName);
      const job = id ? await this.o.store.tryGet(id) : undefined;
      return job && job.cloneId === cloneId ? this.elsewhere(job) : undefined;
    };
    const route = async <T>(cloneId: string, here: (() => Promise<T>) | undefined, there: (node: string) => Promise<T>): Promise<T> => {
      if (here) {
        try {
          return await here();
        } catch (e) {
          if (!(e instanceof NotFoundError)) throw e;
          const node = await remoteNode(cloneId);
          if (!node) throw e;
          return there(node);
        }
      }
      const node = await remoteNode(cloneId);
      if (!node) throw new NotFoundError(`no running clone '${cloneId}'`);
      return there(node);
    };
    const path = (cloneId: string, what: string): string => `/control/v1/clones/${encodeURIComponent(cloneId)}/${what}`;
    return {
      peek: (cloneId: string, stream: OutputStream, offset: number, maxBytes: number): Promise<PeekResult> =>
        route(cloneId, local?.peek ? () => local.peek!(cloneId, stream, offset, maxBytes) : undefined, async (node) => {
          const r = await this.call(node, path(cloneId, 'peek'), { stream, offset, maxBytes });
          const data = b64(field(r, 'data')).subarray(0, maxBytes);
          const next = field(r, 'next');
          return { data, next: typeof next === 'number' ? next : offset + data.length, started: field(r, 'started') === true };
        }),
      enter: (cloneId: string, spec: EnterSpec): Promise<EnterResult> =>
        route(cloneId, local?.enter ? () => local.enter!(cloneId, spec) : undefined, async (node) => {
          const r = await this.call(node, path(cloneId, 'enter'), spec);
          const num = (k: string): number | null => (typeof field(r, k) === 'number' ? (field(r, k) as number) : null);
          return { exitCode: num('exitCode'), signal: num('signal'), stdout: b64(field(r, 'stdout')), stderr: b64(field(r, 'stderr')) };
        }),
      openTerminal: (cloneId: string, spec: TerminalSpec): Promise<TerminalSession> =>
        route(cloneId, local?.openTerminal ? () => local.openTerminal!(cloneId, spec) : undefined, async (node) => {
          const r = await this.call(node, path(cloneId, 'terminal'), spec);
          const session = field(r, 'session');
          if (typeof session !== 'string' || !/^[0-9a-f]{32}$/.test(session)) throw new StateError(`node ${node} opened no terminal`);
          return this.remoteTerminal(node, session);
        }),
    };
  }

  private remoteTerminal(node: string, session: string): TerminalSession {
    let closed = false;
    return {
      round: async (input: Buffer): Promise<TerminalRound> => {
        const r = await this.call(node, `/control/v1/terminals/${session}/round`, { input: input.toString('base64') });
        const exitCode = field(r, 'exitCode');
        return { output: b64(field(r, 'output')), ...(typeof exitCode === 'number' ? { exitCode } : {}) };
      },
      close: async (): Promise<void> => {
        if (closed) return;
        closed = true;
        await this.call(node, `/control/v1/terminals/${session}/close`, {}).catch(() => undefined);
      },
    };
  }
}

/** The job records of a scheduler built after this is (gcd's composition order). */
export function jobsOf(scheduler: () => { store: Pick<JobStore, 'tryGet' | 'serverName'> }): Pick<JobStore, 'tryGet' | 'serverName'> {
  return {
    tryGet: (id: string): Promise<JobRecord | undefined> => scheduler().store.tryGet(id),
    get serverName(): string {
      return scheduler().store.serverName;
    },
  };
}
