/**
 * The grid's HTTP listeners, the server's node API (node-api.ts) and a node's control listener
 * (node-control.ts), share this: listen on host:port, route each request, and answer any
 * failure as one JSON error (a Copper error's code; anything else logged, then a 500).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sendError } from '../api/http-util.js';
import { CopperError, UsageError } from '../errors.js';
import { log } from '../log.js';

export type Route = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/** Listen on `addr` (port 0 picks one); `what` names the listener in the log. Returns the server and its URL. */
export async function listenForRoutes(addr: string, what: string, route: Route): Promise<{ server: Server; url: string }> {
  const [host, port] = splitAddr(addr);
  const server = createServer({ requestTimeout: 0, headersTimeout: 10_000 }, (req, res) => {
    route(req, res).catch((e: unknown) => {
      if (!(e instanceof CopperError)) log.error(`${what} request failed`, { url: req.url?.slice(0, 200), error: String(e) });
      req.resume();
      sendError(res, e);
    });
  });
  server.on('clientError', (_e, sock) => sock.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return { server, url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` };
}

/** A %-escaped part of a path; a malformed escape is the caller's error. */
export function decodePathPart(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new UsageError('malformed %-escape in the path');
  }
}

/** `host:port` (an IPv6 host in brackets) -> [host, port]. */
export function splitAddr(addr: string): [string, number] {
  const m = /^\[?([^\]]*)\]?:(\d{1,5})$/.exec(addr);
  if (!m) throw new UsageError(`address '${addr}' is not host:port`);
  return [m[1], Number(m[2])];
}
