import { request } from 'node:http';
import { UnavailableError } from '../errors.js';

/** Where gcd is: its admin Unix socket on the host, or 10.0.2.100:80 inside a VM. */
export type CopperTarget = { socketPath: string } | { host: string; port: number };

/**
 * The thin clients' one HTTP call: JSON text to gcd, status and text back. Deliberately
 * imports nothing heavy (gcqsub's cold start). Connection failures reject with the socket's
 * own error (its errno code); a timeout rejects with UnavailableError.
 */
export function httpCall(target: CopperTarget, method: string, path: string, body: string, timeoutMs?: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const where = 'socketPath' in target ? { socketPath: target.socketPath } : { host: target.host, port: target.port };
    const req = request(
      { ...where, path, method, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    if (timeoutMs !== undefined) req.setTimeout(timeoutMs, () => req.destroy(new UnavailableError(`gcd did not answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}
