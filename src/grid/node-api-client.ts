/**
 * A compute node's side of the server's node API (node-api.ts): files and archives streamed in
 * request bodies, guest-channel requests piped through, every request with the node's token.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { request, type IncomingMessage, type ServerResponse } from 'node:http';
import { CopperError, DriverError, errorMessage } from '../errors.js';
import type { StageOutResult } from '../stageout/types.js';
import { nodeAuthHeaders } from './node-tokens.js';

/** The server refused or failed a node's request; `code` is its error code (EPERM, ...). */
export class NodeApiError extends DriverError {
  constructor(
    message: string,
    readonly status: number,
    readonly remoteCode: string | undefined,
  ) {
    super(message);
  }
}

export interface NodeApiClientOptions {
  /** GC_SERVER_URL, http://host:port */
  serverUrl: string;
  /** This node's registry name. */
  node: string;
  /** GC_NODE_TOKEN */
  token: string;
  /** Per request, until the answer's head (a big body may take longer to send). */
  timeoutMs?: number;
}

/** Headers a relayed guest request keeps (the rest is hop-by-hop or the guest's business). */
const KEPT_HEADERS = ['content-type', 'content-length', 'accept'];

export class NodeApiClient {
  constructor(private readonly o: NodeApiClientOptions) {}

  /** Deliver a job's output file into its headnode at guestPath (one of the job's output paths). */
  async deliverOutput(jobId: string, guestPath: string, hostFile: string): Promise<void> {
    await this.sendFile(`/node/v1/jobs/${encodeURIComponent(jobId)}/output?path=${encodeURIComponent(guestPath)}`, hostFile);
  }

  /** Place a stage-out archive into the job's headnode; the server's placing result. */
  async placeStageOut(jobId: string, hostArchive: string): Promise<StageOutResult> {
    return (await this.sendFile(`/node/v1/jobs/${encodeURIComponent(jobId)}/stageout`, hostArchive)) as StageOutResult;
  }

  /** The last job of the snapshot (`jobId`, which ran here) has ended: the server frees it. */
  async releaseSnapshot(snapshotId: string, jobId: string): Promise<void> {
    await this.call('POST', `/node/v1/snapshots/${encodeURIComponent(snapshotId)}/release?job=${encodeURIComponent(jobId)}`, undefined);
  }

  /** The job (which ended here) has dependents: the server reviews them, with a fresh snapshot. */
  async reviewDependents(jobId: string): Promise<void> {
    await this.call('POST', `/node/v1/jobs/${encodeURIComponent(jobId)}/dependents`, undefined);
  }

  /** Pipe a guest-channel request of a clone on this node to the server, and its answer back. */
  relayGuest(cloneId: string, req: IncomingMessage, res: ServerResponse): void {
    const headers: Record<string, string> = { ...nodeAuthHeaders(this.o.node, this.o.token) };
    for (const h of KEPT_HEADERS) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const url = new URL(`/node/v1/clones/${encodeURIComponent(cloneId)}/api${req.url ?? '/'}`, this.o.serverUrl);
    const out = request(url, { method: req.method, headers }, (ans) => {
      const back: Record<string, string> = {};
      for (const h of ['content-type', 'content-length']) {
        const v = ans.headers[h];
        if (typeof v === 'string') back[h] = v;
      }
      res.writeHead(ans.statusCode ?? 502, back);
      ans.pipe(res);
    });
    out.on('error', (e) => {
      if (!res.headersSent) {
        const text = JSON.stringify({ error: `the server cannot be reached from this node: ${errorMessage(e)}`, code: 'EUNAVAILABLE' });
        res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      } else res.destroy();
    });
    req.on('aborted', () => out.destroy());
    req.pipe(out);
  }

  private async sendFile(path: string, file: string): Promise<unknown> {
    const size = (await stat(file)).size;
    return this.call('PUT', path, { file, size });
  }

  private call(method: string, path: string, body: { file: string; size: number } | undefined): Promise<unknown> {
    const headers: Record<string, string> = { ...nodeAuthHeaders(this.o.node, this.o.token), 'content-length': String(body?.size ?? 0) };
    if (body) headers['content-type'] = 'application/octet-stream';
    return new Promise((resolve, reject) => {
      const req = request(new URL(path, this.o.serverUrl), { method, headers, timeout: this.o.timeoutMs ?? 10 * 60_000 }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= 1024 * 1024) chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          let v: unknown;
          try {
            v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            v = undefined;
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve(v);
          const o = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
          const msg = typeof o.error === 'string' ? o.error : `HTTP ${status}`;
          reject(new NodeApiError(`server's node API: ${msg}`, status, typeof o.code === 'string' ? o.code : undefined));
        });
      });
      req.on('timeout', () => req.destroy(new DriverError(`server's node API did not answer ${method} ${path.split('?')[0]}`)));
      req.on('error', (e) => reject(e instanceof CopperError ? e : new DriverError(`server's node API: ${errorMessage(e)}`, { cause: e })));
      if (body) {
        const src = createReadStream(body.file);
        src.on('error', (e) => req.destroy(e));
        src.pipe(req);
      } else req.end();
    });
  }
}
