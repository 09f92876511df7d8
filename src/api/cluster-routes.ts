/**
 * Typed routes for virtual clusters (docs/PROTOCOL.md): JSON in, JSON out, errors as
 * `{error, code, fields?}` with an HTTP status. The identity rules are those of `gc clone`
 * (clusters/calls.ts): a VM's channel acts on its own cluster and may not name a headnode;
 * the administrator names one.
 */
import { UsageError } from '../errors.js';
import type { ClusterCalls } from '../clusters/calls.js';
import type { KillSelector } from '../clusters/types.js';
import { asObject, readJson, sendJson } from './http-util.js';
import type { Route } from './routes.js';

function optString(o: Record<string, unknown>, k: string): string | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw new UsageError(`${k} must be a non-empty string`);
  return v;
}

function wholeNumber(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new UsageError(`${what} must be a whole number`);
  return v;
}

function selector(o: Record<string, unknown>): KillSelector {
  const forms = [o.ids !== undefined, o.generation !== undefined, o.all !== undefined].filter(Boolean).length;
  if (forms !== 1) throw new UsageError('kill: give exactly one of ids, generation, all');
  if (o.all !== undefined) {
    if (o.all !== true) throw new UsageError('all must be true');
    return { all: true };
  }
  if (o.generation !== undefined) return { generation: wholeNumber(o.generation, 'generation') };
  if (!Array.isArray(o.ids)) throw new UsageError('ids must be an array of clone ids');
  return { ids: o.ids.map((v, i) => wholeNumber(v, `ids[${i}]`)) };
}

/** The headnode named in the query (GET) or body (POST); only the administrator may name one. */
const query = (url: URL, k: string): string | undefined => url.searchParams.get(k) ?? undefined;

export function clusterRoutes(calls: ClusterCalls): Route[] {
  return [
    {
      method: 'POST',
      path: /^\/v1\/clusters\/clone$/,
      async handle({ req, res, actor }) {
        const b = asObject(await readJson(req), 'request');
        const n = wholeNumber(b.n, 'n');
        const ttlSec = b.ttlSec === undefined ? undefined : wholeNumber(b.ttlSec, 'ttlSec');
        if (ttlSec === 0) throw new UsageError('ttlSec must be more than 0 seconds');
        const headnode = optString(b, 'headnode');
        const clones = await calls.clone(actor, { n, ...(ttlSec !== undefined ? { ttlSec } : {}), ...(headnode !== undefined ? { headnode } : {}) });
        sendJson(res, 200, { clones });
      },
    },
    {
      method: 'GET',
      path: /^\/v1\/clusters$/,
      async handle({ res, actor, url }) {
        const headnode = query(url, 'headnode');
        const all = url.searchParams.get('all') === '1';
        sendJson(res, 200, { clones: await calls.list(actor, { all, ...(headnode !== undefined ? { headnode } : {}) }) });
      },
    },
    {
      method: 'GET',
      path: /^\/v1\/clusters\/usage$/,
      async handle({ res, actor }) {
        sendJson(res, 200, { usage: calls.usage(actor) });
      },
    },
    {
      method: 'POST',
      path: /^\/v1\/clusters\/kill$/,
      async handle({ req, res, actor }) {
        const b = asObject(await readJson(req), 'request');
        sendJson(res, 200, { killed: await calls.kill(actor, selector(b), optString(b, 'headnode')) });
      },
    },
    {
      method: 'GET',
      path: /^\/v1\/clusters\/whoami$/,
      async handle({ res, actor, url }) {
        sendJson(res, 200, calls.whoami(actor, query(url, 'headnode')));
      },
    },
  ];
}
