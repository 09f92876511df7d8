/** JSON calls between the server and compute nodes, authenticated with a node's token. */
import { request } from 'node:http';
import { CopperError, DriverError, NotFoundError, PermissionError, StateError, UnavailableError, UsageError, errorMessage } from '../errors.js';
import { nodeAuthHeaders } from './node-tokens.js';

/** Answers are bounded: gcqexec's output is at most 16 MiB a stream, in base64. */
export const MAX_ANSWER_BYTES = 48 * 1024 * 1024;

/** The other side's refusal as the same typed error here, so callers handle it as a local one. */
export function remoteError(status: number, body: unknown, what: string): CopperError {
  const o = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const msg = typeof o.error === 'string' ? o.error : `${what}: HTTP ${status}`;
  switch (o.code) {
    case 'EPERM':
      return new PermissionError(msg);
    case 'ESTATE':
      return new StateError(msg);
    case 'ENOENT':
      return new NotFoundError(msg);
    case 'EUSAGE':
      return new UsageError(msg);
    case 'EUNAVAILABLE':
      return new UnavailableError(msg);
    default:
      return new DriverError(msg);
  }
}

export interface JsonCall {
  base: string;
  method: 'GET' | 'POST';
  path: string;
  /** The node whose token authenticates the call (the caller's own, or the node called). */
  node: string;
  token: string;
  body?: unknown;
  timeoutMs?: number;
}

export function callJson(c: JsonCall): Promise<unknown> {
  const data = c.body === undefined ? undefined : Buffer.from(JSON.stringify(c.body));
  const headers: Record<string, string> = { ...nodeAuthHeaders(c.node, c.token), 'content-length': String(data?.length ?? 0) };
  if (data) headers['content-type'] = 'application/json';
  const what = `node ${c.node} control`;
  return new Promise((resolve, reject) => {
    const req = request(new URL(c.path, c.base), { method: c.method, headers, timeout: c.timeoutMs ?? 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (b: Buffer) => {
        size += b.length;
        if (size > MAX_ANSWER_BYTES) res.destroy(new DriverError(`${what}: answer over ${MAX_ANSWER_BYTES} bytes`));
        else chunks.push(b);
      });
      res.on('error', (e) => reject(e instanceof CopperError ? e : new UnavailableError(`${what}: ${errorMessage(e)}`)));
      res.on('end', () => {
        let v: unknown;
        try {
          v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          v = undefined;
        }
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve(v);
        else reject(remoteError(status, v, what));
      });
    });
    req.on('timeout', () => req.destroy(new UnavailableError(`${what}: no answer`)));
    req.on('error', (e) => reject(e instanceof CopperError ? e : new UnavailableError(`${what}: ${errorMessage(e)}`)));
    req.end(data);
  });
}
