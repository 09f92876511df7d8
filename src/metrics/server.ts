import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UsageError, errorMessage } from '../errors.js';
import { log } from '../log.js';

/** `host:port` or `[v6]:port`, as GC_METRICS_ADDR gives it. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** Parse GC_METRICS_ADDR; undefined when metrics are off (unset, empty or "off"). */
export function parseMetricsAddr(text: string | undefined): ListenAddress | undefined {
  const t = (text ?? '').trim();
  if (t === '' || t === 'off') return undefined;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(t);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new UsageError(`GC_METRICS_ADDR=${t}: expected HOST:PORT (e.g. 127.0.0.1:9464) or off`);
  }
  return { host: m[1] ?? m[2], port };
}

/**
 * A separate small HTTP listener for Prometheus: GET /metrics only, on an address the admin
 * chooses (never a guest channel: guests must not read other users' job counts).
 */
export class MetricsServer {
  private server: Server | undefined;

  constructor(private readonly render: () => Promise<{ body: string; contentType: string }>) {}

  async listen(addr: ListenAddress): Promise<ListenAddress> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' || path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
        return;
      }
      this.render().then(
        (m) => res.writeHead(200, { 'content-type': m.contentType }).end(m.body),
        (e: unknown) => {
          log.error('metrics: render failed', { error: errorMessage(e) });
          res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n');
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(addr.port, addr.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    const a = server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
