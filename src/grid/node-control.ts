/**
 * A compute node's control listener (GC_NODE_CONTROL_ADDR): the server's gcqdel, gcqsig
 * (signals, suspend, resume), gcqrerun, gcqpeek and gcqexec of jobs that run on this node. The
 * node puts its URL in its registry record (controlUrl); the server authenticates with this
 * node's own token (the one the node holds as GC_NODE_TOKEN), so no other node can drive it.
 * Who may act on which job is decided on the server before it calls (users' permissions are
 * the server's); the node only acts on jobs and clones that run here.
 *   POST /control/v1/jobs/:id/cancel     {reason: deleted|forced|rerun}  -> {cancelled}
 *   POST /control/v1/jobs/:id/signal     {signal: NAME|suspend|resume}   -> {}
 *   POST /control/v1/clones/:clone/peek  {stream, offset, maxBytes}      -> {data(b64), next, started}
 *   POST /control/v1/clones/:clone/enter {argv, cwd, env, user}          -> {exitCode, signal, stdout, stderr (b64)}
 *   POST /control/v1/clones/:clone/terminal {... rows, cols}             -> {session}
 *   POST /control/v1/terminals/:session/round {input(b64)}               -> {output(b64), exitCode?}
 *   POST /control/v1/terminals/:session/close                            -> {}
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { closeGracefully } from '../api/close-server.js';
import { asObject, asStringArray, asStringMap, readJson, sendJson } from '../api/http-util.js';
import type { Driver, EnterSpec, OutputStream, TerminalSession } from '../drivers/driver.js';
import { parseSignal } from '../drivers/signals.js';
import { NotFoundError, PermissionError, StateError, UsageError } from '../errors.js';
import type { LiveJobs } from '../scheduler/live-jobs.js';
import type { StopReason } from '../scheduler/runner.js';
import { decodePathPart, listenForRoutes } from './node-listener.js';
import { presentedCredentials, sameToken } from './node-tokens.js';

export interface NodeControlOptions {
  addr: string;
  /** This node's registry name and its token (GC_NODE_TOKEN). */
  node: string;
  token: string;
  /** Scheduler.localRunning(): the commands that run in this gcd. */
  running: { live: LiveJobs; cancel: (id: string, reason: StopReason) => boolean };
  /** The node's driver: its clones. */
  clones: Pick<Driver, 'peek' | 'enter' | 'openTerminal'>;
  /** A terminal with no round for this long is closed (the server's sessions round every few s). */
  terminalIdleMs?: number;
}

const REASONS: ReadonlySet<string> = new Set(['deleted', 'forced', 'rerun']);
const STREAMS: ReadonlySet<string> = new Set(['stdout', 'stderr']);

export class NodeControl {
  private server: Server | undefined;
  private readonly terminals = new Map<string, { session: TerminalSession; seen: number }>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly o: NodeControlOptions) {}

  /** Listens; returns the URL to put in the registry record (controlUrl). */
  async listen(): Promise<string> {
    const { server, url } = await listenForRoutes(this.o.addr, 'node control', (req, res) => this.route(req, res));
    this.server = server;
    const idle = this.o.terminalIdleMs ?? 120_000;
    this.sweeper = setInterval(() => void this.sweepTerminals(idle), Math.min(idle, 30_000));
    this.sweeper.unref();
    return url;
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    await this.sweepTerminals(0);
    if (this.server) await closeGracefully(this.server);
    this.server = undefined;
  }

  private async sweepTerminals(idleMs: number): Promise<void> {
    const now = Date.now();
    for (const [id, t] of [...this.terminals]) {
      if (now - t.seen < idleMs) continue;
      this.terminals.delete(id);
      await t.session.close().catch(() => undefined);
    }
  }

  private authenticate(req: IncomingMessage): void {
    const c = presentedCredentials(req.headers);
    if (!c || c.name !== this.o.node || !sameToken(c.token, this.o.token)) throw new PermissionError(`node ${this.o.node} control: wrong token`);
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.authenticate(req);
    if (req.method !== 'POST') throw new NotFoundError(`no such control endpoint ${req.method}`);
    const p = new URL(req.url ?? '/', 'http://node').pathname;
    const body = asObject(await readJson(req), 'request');
    let m: RegExpExecArray | null;
    if ((m = /^\/control\/v1\/jobs\/([^/]+)\/cancel$/.exec(p))) {
      const reason = String(body.reason);
      if (!REASONS.has(reason)) throw new UsageError(`bad stop reason '${reason.slice(0, 20)}'`);
      return sendJson(res, 200, { cancelled: this.o.running.cancel(decodePathPart(m[1]), reason as StopReason) });
    }
    if ((m = /^\/control\/v1\/jobs\/([^/]+)\/signal$/.exec(p))) {
      const id = decodePathPart(m[1]);
      const live = this.o.running.live.get(id);
      if (!live) throw new StateError(`job ${id} has no command running on node ${this.o.node}`);
      const sig = String(body.signal);
      if (sig === 'suspend') await live.suspend();
      else if (sig === 'resume') await live.resume();
      else await live.signal(parseSignal(sig));
      return sendJson(res, 200, {});
    }
    if ((m = /^\/control\/v1\/clones\/([^/]+)\/peek$/.exec(p))) {
      if (!this.o.clones.peek) throw new StateError("this node's driver cannot read running output");
      const stream = String(body.stream);
      const offset = Number(body.offset);
      const maxBytes = Number(body.maxBytes);
      if (!STREAMS.has(stream) || !Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(maxBytes) || maxBytes < 0 || maxBytes > 4 * 1024 * 1024)
        throw new UsageError('bad peek request');
      const r = await this.o.clones.peek(decodePathPart(m[1]), stream as OutputStream, offset, maxBytes);
      return sendJson(res, 200, { data: r.data.toString('base64'), next: r.next, started: r.started });
    }
    if ((m = /^\/control\/v1\/clones\/([^/]+)\/enter$/.exec(p))) {
      if (!this.o.clones.enter) throw new StateError("this node's driver cannot run commands beside a job");
      const r = await this.o.clones.enter(decodePathPart(m[1]), enterSpec(body));
      return sendJson(res, 200, { exitCode: r.exitCode, signal: r.signal, stdout: r.stdout.toString('base64'), stderr: r.stderr.toString('base64') });
    }
    if ((m = /^\/control\/v1\/clones\/([^/]+)\/terminal$/.exec(p))) {
      if (!this.o.clones.openTerminal) throw new StateError("this node's driver cannot open terminals");
      const rows = Number(body.rows);
      const cols = Number(body.cols);
      if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1 || rows > 1000 || cols > 1000) throw new UsageError('bad terminal size');
      const session = await this.o.clones.openTerminal(decodePathPart(m[1]), { ...enterSpec(body), rows, cols });
      const id = randomBytes(16).toString('hex');
      this.terminals.set(id, { session, seen: Date.now() });
      return sendJson(res, 200, { session: id });
    }
    if ((m = /^\/control\/v1\/terminals\/([0-9a-f]{32})\/(round|close)$/.exec(p))) {
      const t = this.terminals.get(m[1]);
      if (!t) throw new NotFoundError('no such terminal session on this node');
      if (m[2] === 'close') {
        this.terminals.delete(m[1]);
        await t.session.close();
        return sendJson(res, 200, {});
      }
      t.seen = Date.now();
      const input = typeof body.input === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(body.input) ? Buffer.from(body.input, 'base64') : Buffer.alloc(0);
      const r = await t.session.round(input);
      return sendJson(res, 200, { output: r.output.toString('base64'), ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}) });
    }
    throw new NotFoundError(`no such control endpoint ${p.slice(0, 100)}`);
  }

  get address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }
}

function enterSpec(body: Record<string, unknown>): EnterSpec {
  if (typeof body.cwd !== 'string' || typeof body.user !== 'string') throw new UsageError('bad enter request');
  return { argv: asStringArray(body.argv ?? [], 'argv'), cwd: body.cwd, env: asStringMap(body.env, 'env'), user: body.user };
}
