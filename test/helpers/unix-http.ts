import { request } from 'node:http';

export interface UnixAnswer {
  status: number;
  body: string;
}

/**
 * One HTTP request over a Unix socket. Resolves with the answer, or rejects with the
 * connection's error (the socket not there yet, refused, reset); never hangs past timeoutMs.
 */
export function unixHttp(socketPath: string, method: string, path: string, body?: string | Buffer, timeoutMs = 15_000): Promise<UnixAnswer> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body);
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}
