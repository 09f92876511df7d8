import type { IncomingMessage, ServerResponse } from 'node:http';
import { CopperError, UsageError } from '../errors.js';
import { errorBody, httpStatusOf } from './error-map.js';

/** Bodies above this are refused before they are buffered: a guest must not exhaust gcd. */
export const MAX_BODY_BYTES = 1024 * 1024;

export class PayloadTooLargeError extends CopperError {
  override readonly code = 'ETOOBIG';
}

export async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    const b = c as Buffer;
    size += b.length;
    if (size > MAX_BODY_BYTES) throw new PayloadTooLargeError(`request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(b);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new UsageError('request body is not valid JSON');
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  // undefined (a route whose call returns nothing, e.g. DELETE) is answered as {}, not a throw.
  const text = JSON.stringify(body) ?? '{}';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendError(res: ServerResponse, err: unknown): void {
  if (!res.headersSent) sendJson(res, httpStatusOf(err), errorBody(err));
  else res.destroy();
}

/** Narrowing helpers for untrusted JSON. */
export function asObject(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

export function asStringArray(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new UsageError(`${what} must be an array of strings`);
  return v;
}

export function asStringMap(v: unknown, what: string): Record<string, string> {
  if (v === undefined) return {};
  const o = asObject(v, what);
  for (const [k, x] of Object.entries(o)) if (typeof x !== 'string') throw new UsageError(`${what}.${k} must be a string`);
  return o as Record<string, string>;
}
