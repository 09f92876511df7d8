import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import { join } from 'node:path';
import { closeGracefully } from './close-server.js';

/**
 * One HTTP server on one Unix socket (0600) per VM, in a 0700 folder: the socket a request
 * arrives on is the VM's identity. Used by the server's guest channels (channels.ts) and by a
 * compute node's relayed ones (grid/relay-channels.ts). A flood on one socket touches only
 * that server (at most 64 connections; a malformed request closes its connection).
 */
export class VmSockets {
  private readonly servers = new Map<string, { server: Server; path: string }>();
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'run', 'channels');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
  }

  pathFor(vmId: string): string {
    return join(this.dir, `${vmId}.sock`);
  }

  /** Listen for the VM (once: an open VM's path is returned as it is). */
  async open(vmId: string, handler: RequestListener): Promise<{ path: string; opened: boolean }> {
    const existing = this.servers.get(vmId);
    if (existing) return { path: existing.path, opened: false };
    const path = this.pathFor(vmId);
    rmSync(path, { force: true });
    const server = createServer({ requestTimeout: 0, headersTimeout: 10_000 }, handler);
    server.maxConnections = 64;
    server.on('clientError', (_e, sock) => sock.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    this.servers.set(vmId, { server, path });
    return { path, opened: true };
  }

  /** Stop listening (requests being answered get closeGracefully's grace) and remove the socket. */
  async close(vmId: string): Promise<void> {
    const s = this.servers.get(vmId);
    // Not open here: a killed gcd's socket, found by the clone sweep at restart.
    if (!s) return rmSync(this.pathFor(vmId), { force: true });
    this.servers.delete(vmId);
    await closeGracefully(s.server);
    rmSync(s.path, { force: true });
  }

  async closeAll(): Promise<void> {
    for (const id of [...this.servers.keys()]) await this.close(id);
  }
}
