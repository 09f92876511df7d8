import type { IncomingMessage, ServerResponse } from 'node:http';
import type { GuestChannels, GuestIdentity } from '../headnodes/types.js';
import { log } from '../log.js';
import { VmSockets } from './vm-sockets.js';
import type { Actor } from '../scheduler/actor.js';
import { ArchiveOffers } from '../stageout/archive-offers.js';

export type ApiHandler = (req: IncomingMessage, res: ServerResponse, actor: Actor) => void;

/**
 * One listening Unix socket per VM. QEMU's guestfwd spawns `socat` to it for each guest
 * connection, so the socket a request arrives on is the guest's identity: nothing in the
 * request can change it. A flood or garbage on one VM's socket only touches that server.
 */
export class ChannelServer implements GuestChannels {
  private readonly sockets: VmSockets;
  readonly dir: string;
  /** Stage-out archives a headnode fetches on its own channel (src/stageout/archive-offers.ts). */
  readonly archives = new ArchiveOffers();

  constructor(
    stateDir: string,
    private readonly handler: ApiHandler,
  ) {
    this.sockets = new VmSockets(stateDir);
    this.dir = this.sockets.dir;
  }

  pathFor(vmId: string): string {
    return this.sockets.pathFor(vmId);
  }

  async open(identity: GuestIdentity): Promise<string> {
    const actor: Actor = { kind: 'guest', identity: { ...identity } };
    const { path, opened } = await this.sockets.open(identity.vmId, (req, res) => {
      if (!this.archives.handle(req, res, actor)) this.handler(req, res, actor);
    });
    if (opened) log.debug('guest channel open', { vm: identity.vmId, owner: identity.owner });
    return path;
  }

  async close(vmId: string): Promise<void> {
    await this.sockets.close(vmId);
  }

  async closeAll(): Promise<void> {
    this.archives.clear();
    await this.sockets.closeAll();
  }
}
