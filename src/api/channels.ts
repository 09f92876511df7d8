import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { GuestChannels, GuestIdentity } from '../headnodes/types.js';
import { log } from '../log.js';
import { closeGracefully } from './close-server.js';
import type { Actor } from '../scheduler/actor.js';
import { ArchiveOffers } from '../stageout/archive-offers.js';

export type ApiHandler = (req: IncomingMessage, res: ServerResponse, actor: Actor) => void;

/**
 * One listening Unix socket per VM. QEMU's guestfwd spawns `socat` to it for each guest
 * connection, so the socket a request arrives on is the guest's identity: nothing in the
 * request can change it. A flood or garbage on one VM's socket only touches that server.
 */
export class ChannelServer implements GuestChannels {
  private readonly servers = new Map<string, { server: Server; path: string }>();
  readonly dir: string;
  /** Stage-out archives a headnode fetches on its own channel (src/stageout/archive-offers.ts). */
  readonly archives = new ArchiveOffers();

  constructor(
    stateDir: string,
    private readonly handler: ApiHandler,
  ) {
    this.dir = join(stateDir, 'run', 'channels');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
  }

  pathFor(vmId: string): string {
    return join(this.dir, `${vmId}.sock`);
  }

  async open(identity: GuestIdentity): Promise<string> {
    const existing = this.servers.get(identity.vmId);
    if (existing) return existing.path;
    const path = this.pathFor(identity.vmId);
    rmSync(path, { force: true });
    const actor: Actor = { kind: 'guest', identity: { ...identity } };
    const server = createServer({ requestTimeout: 0, headersTimeout: 10_000 }, (req, res) => {
      if (!this.archives.handle(req, res, actor)) this.handler(req, res, actor);
    });
    server.maxConnections = 64;
    server.on('clientError', (_e, sock) => sock.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    this.servers.set(identity.vmId, { server, path });
    log.debug('guest channel open', { vm: identity.vmId, owner: identity.owner });
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
    this.archives.clear();
    for (const id of [...this.servers.keys()]) await this.close(id);
  }
}
