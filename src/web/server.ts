import { createServer, type Server } from 'node:http';
import { UsageError } from '../errors.js';
import { log } from '../log.js';
import { dashboardApp, type DashboardServices } from './app.js';

export interface WebDashboard {
  /** `http://host:port` as listened on. */
  url: string;
  close(): Promise<void>;
}

/** `host:port`, `[::1]:8080`. */
export function parseWebAddr(addr: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(addr);
  const port = Number(m?.[2]);
  if (!m || !m[1] || port > 65535) throw new UsageError(`GC_WEB_ADDR: want host:port, got '${addr}'`);
  return { host: m[1], port };
}

/**
 * The dashboard on its own TCP listener (GC_WEB_ADDR), apart from the admin socket and the
 * guest channels: nothing on it is trusted but a signed token.
 */
export async function startWebDashboard(addr: string, services: DashboardServices): Promise<WebDashboard> {
  const { host, port } = parseWebAddr(addr);
  const server: Server = createServer(dashboardApp(services));
  server.on('clientError', (_e, sock) => sock.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  const shown = a && typeof a === 'object' ? (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`) : addr;
  const url = `http://${shown}`;
  log.info('web dashboard listening', { url });
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
