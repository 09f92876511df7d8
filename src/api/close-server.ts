import type { Server } from 'node:http';

/**
 * Stops listening, lets requests already being handled finish for up to graceMs, then cuts
 * what is left. A gcqsub that reached gcd just before a shutdown gets its answer, so a client
 * never loses the id of a job that was queued (long polls are cut at the grace).
 */
export async function closeGracefully(server: Server, graceMs = 3000): Promise<void> {
  await new Promise<void>((resolve) => {
    const cut = setTimeout(() => server.closeAllConnections(), graceMs);
    cut.unref();
    server.close(() => {
      clearTimeout(cut);
      resolve();
    });
    server.closeIdleConnections();
  });
}
