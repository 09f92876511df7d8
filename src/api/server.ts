import { chmodSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { UsageError, NotFoundError } from '../errors.js';
import { closeGracefully } from './close-server.js';
import { log } from '../log.js';
import type { ClusterCalls } from '../clusters/calls.js';
import { ADMIN, type Actor } from '../scheduler/actor.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { CliRunner } from './cli-call.js';
import { clusterRoutes } from './cluster-routes.js';
import { asObject, asStringArray, asStringMap, readJson, sendError, sendJson } from './http-util.js';
import type { Route } from './routes.js';

/** A path segment, %-decoded; a malformed escape is the caller's error, not gcd's (URIError). */
function decodeParam(p: string | undefined): string {
  try {
    return decodeURIComponent(p ?? '');
  } catch {
    throw new UsageError(`malformed %-escape in the path: '${p ?? ''}'`);
  }
}

/** What the API serves from; gcd's composition root (server/compose.ts) hands it over. */
export interface ApiServices {
  scheduler: Pick<Scheduler, 'list' | 'get' | 'delete'>;
  /** Runs the tools' commands (POST /v1/cli). */
  cli: CliRunner;
  /** Virtual clusters, when the backend has them (QEMU). */
  clusters?: ClusterCalls;
}

/**
 * gcd's HTTP/JSON API. The same handler serves the admin socket (actor: admin) and every
 * guest channel (actor: that VM). Routes (docs/PROTOCOL.md):
 *   POST   /v1/cli               run a tool (gcqsub, gcqstat, gcqdel, gc ...) for a thin client
 *   GET    /v1/jobs[?all=1]      job records as JSON
 *   GET    /v1/jobs/:id
 *   DELETE /v1/jobs/:id
 *   POST   /v1/clusters/clone    GET /v1/clusters   GET /v1/clusters/usage
 *   POST   /v1/clusters/kill     GET /v1/clusters/whoami          (cluster-routes.ts)
 * More routes: pass them to the constructor (or add a module like cluster-routes.ts).
 */
export class ApiServer {
  private server: Server | undefined;
  private readonly routes: Route[];

  constructor(
    private readonly services: ApiServices,
    extraRoutes: Route[] = [],
  ) {
    this.routes = [...this.coreRoutes(), ...(services.clusters ? clusterRoutes(services.clusters) : []), ...extraRoutes];
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse, actor: Actor): void => {
    this.route(req, res, actor).catch((e: unknown) => sendError(res, e));
  };

  private async route(req: IncomingMessage, res: ServerResponse, actor: Actor): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://gcd');
    for (const r of this.routes) {
      if (r.method !== req.method) continue;
      const m = r.path.exec(url.pathname);
      if (!m) continue;
      if (req.method === 'GET' || req.method === 'DELETE') await readJson(req); // drain (and bound) any body
      await r.handle({ req, res, actor, url, params: m.slice(1).map(decodeParam) });
      return;
    }
    if (url.pathname.split('/').filter(Boolean)[0] !== 'v1') throw new NotFoundError(`no such endpoint ${url.pathname}`);
    throw new NotFoundError(`no such endpoint ${req.method} ${url.pathname}`);
  }

  private coreRoutes(): Route[] {
    const { scheduler, cli } = this.services;
    return [
      {
        method: 'POST',
        path: /^\/v1\/cli$/,
        async handle({ req, res, actor }) {
          const body = asObject(await readJson(req), 'request');
          if (typeof body.tool !== 'string') throw new UsageError('tool must be a string');
          const result = await cli(body.tool, {
            actor,
            argv: asStringArray(body.argv ?? [], 'argv'),
            cwd: typeof body.cwd === 'string' && body.cwd.startsWith('/') ? body.cwd : '/',
            env: asStringMap(body.env, 'env'),
            account: typeof body.account === 'string' && /^[a-z_][a-z0-9_-]{0,31}$/i.test(body.account) ? body.account : 'root',
            files: asStringMap(body.files, 'files'),
            missing: body.missing === undefined ? [] : asStringArray(body.missing, 'missing'),
            ...(typeof body.cursor === 'string' && body.cursor.length <= 256 ? { cursor: body.cursor } : {}),
            ...terminalFields(body),
            ...(body.groups === undefined ? {} : { groups: asStringArray(body.groups, 'groups') }),
            ...(body.interrupt === true ? { interrupt: true } : {}),
          });
          sendJson(res, 200, result);
        },
      },
      {
        method: 'GET',
        path: /^\/v1\/jobs\/?$/,
        async handle({ res, actor, url }) {
          sendJson(res, 200, { jobs: await scheduler.list(actor, { includeFinished: url.searchParams.get('all') === '1' }) });
        },
      },
      {
        method: 'GET',
        path: /^\/v1\/jobs\/([^/]+)\/?$/,
        async handle({ res, actor, params }) {
          sendJson(res, 200, await scheduler.get(actor, params[0]));
        },
      },
      {
        method: 'DELETE',
        path: /^\/v1\/jobs\/([^/]+)\/?$/,
        async handle({ res, actor, params }) {
          sendJson(res, 200, await scheduler.delete(actor, params[0]));
        },
      },
    ];
  }

  /** Listen on the admin socket: mode 0600, so host access is by Unix permissions (root). */
  async listenAdmin(path: string): Promise<void> {
    rmSync(path, { force: true });
    const server = createServer({ requestTimeout: 0 }, (req, res) => this.handle(req, res, ADMIN));
    server.on('clientError', (_e, sock) => sock.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    this.server = server;
    log.info('gcd API listening', { socket: path });
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    await closeGracefully(s);
  }
}

/** A terminal's size and keystrokes in a /v1/cli call (gcqexec ID alone); malformed ones are left out. */
function terminalFields(body: Record<string, unknown>): { terminal?: { rows: number; cols: number }; input?: string } {
  const out: { terminal?: { rows: number; cols: number }; input?: string } = {};
  const t = body.terminal;
  if (typeof t === 'object' && t !== null) {
    const { rows, cols } = t as Record<string, unknown>;
    if (typeof rows === 'number' && typeof cols === 'number') out.terminal = { rows, cols };
  }
  if (typeof body.input === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(body.input)) out.input = body.input;
  return out;
}
