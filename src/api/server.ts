import { chmodSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { UsageError, NotFoundError } from '../errors.js';
import { log } from '../log.js';
import type { ToolServices } from '../cli/tool.js';
import { runTool } from '../cli/tools/index.js';
import { ADMIN, type Actor } from '../scheduler/actor.js';
import { asObject, asStringArray, asStringMap, readJson, sendError, sendJson } from './http-util.js';

/**
 * gcd's HTTP/JSON API. The same handler serves the admin socket (actor: admin) and every
 * guest channel (actor: that VM). Routes:
 *   POST   /v1/cli            run a tool (gcqsub, gcqstat, gcqdel, gc ...) for a thin client
 *   GET    /v1/jobs[?all=1]   job records as JSON
 *   GET    /v1/jobs/:id
 *   DELETE /v1/jobs/:id
 */
export class ApiServer {
  private server: Server | undefined;
  constructor(private readonly services: ToolServices) {}

  readonly handle = (req: IncomingMessage, res: ServerResponse, actor: Actor): void => {
    this.route(req, res, actor).catch((e: unknown) => sendError(res, e));
  };

  private async route(req: IncomingMessage, res: ServerResponse, actor: Actor): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://gcd');
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] !== 'v1') throw new NotFoundError(`no such endpoint ${url.pathname}`);
    const sched = this.services.scheduler;
    if (req.method === 'POST' && parts[1] === 'cli' && parts.length === 2) {
      const body = asObject(await readJson(req), 'request');
      if (typeof body.tool !== 'string') throw new UsageError('tool must be a string');
      const result = await runTool(
        body.tool,
        {
          actor,
          argv: asStringArray(body.argv ?? [], 'argv'),
          cwd: typeof body.cwd === 'string' && body.cwd.startsWith('/') ? body.cwd : '/',
          env: asStringMap(body.env, 'env'),
          account: typeof body.account === 'string' && /^[a-z_][a-z0-9_-]{0,31}$/i.test(body.account) ? body.account : 'root',
          files: asStringMap(body.files, 'files'),
          missing: body.missing === undefined ? [] : asStringArray(body.missing, 'missing'),
          ...(body.groups === undefined ? {} : { groups: asStringArray(body.groups, 'groups') }),
        },
        this.services,
      );
      sendJson(res, 200, result);
      return;
    }
    if (parts[1] === 'jobs') {
      await readJson(req); // drain (and bound) any body
      if (req.method === 'GET' && parts.length === 2) {
        sendJson(res, 200, { jobs: await sched.list(actor, { includeFinished: url.searchParams.get('all') === '1' }) });
        return;
      }
      if (parts.length === 3 && req.method === 'GET') {
        sendJson(res, 200, await sched.get(actor, decodeURIComponent(parts[2]!)));
        return;
      }
      if (parts.length === 3 && req.method === 'DELETE') {
        sendJson(res, 200, await sched.delete(actor, decodeURIComponent(parts[2]!)));
        return;
      }
    }
    throw new NotFoundError(`no such endpoint ${req.method} ${url.pathname}`);
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
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
