/**
 * Guest channels of clones on a compute node. As on the server (api/channels.ts), one Unix
 * socket per clone that QEMU's guestfwd connects to, so the socket is the clone's identity;
 * here each request is piped to the server's node API with the clone's id, and the server
 * answers as that clone (after checking the clone's job runs on this node). Nothing the guest
 * sends names another VM: the clone id comes from the socket, never from the request.
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { closeGracefully } from '../api/close-server.js';
import { log } from '../log.js';
import type { VmChannels } from '../vm/clones/types.js';
import type { NodeApiClient } from './node-api-client.js';

export class RelayChannels implements VmChannels {
  private readonly servers = new Map<string, { server: Server; path: string }>();
  readonly dir: string;

  constructor(
    stateDir: string,
    private readonly client: Pick<NodeApiClient, 'relayGuest'>,
  ) {
    this.dir = join(stateDir, 'run', 'channels');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
  }

  pathFor(vmId: string): string {
    return join(this.dir, `${vmId}.sock`);
  }

  async open(identity: Parameters<VmChannels['open']>[0]): Promise<string> {
    const existing = this.servers.get(identity.vmId);
    if (existing) return existing.path;
    const vmId = identity.vmId;
    const path = this.pathFor(vmId);
    rmSync(path, { force: true });
    const server = createServer({ requestTimeout: 0, headersTimeout: 10_000 }, (req, res) => this.client.relayGuest(vmId, req, res));
    server.maxConnections = 64;
    server.on('clientError', (_e, sock) => sock.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    this.servers.set(vmId, { server, path });
    log.debug('relayed guest channel open', { vm: vmId });
    return path;
  }

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
