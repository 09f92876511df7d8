/**
 * Guest channels of clones on a compute node. As on the server (api/channels.ts), one Unix
 * socket per clone that QEMU's guestfwd connects to, so the socket is the clone's identity;
 * here each request is piped to the server's node API with the clone's id, and the server
 * answers as that clone (after checking the clone's job runs on this node). Nothing the guest
 * sends names another VM: the clone id comes from the socket, never from the request.
 */
import { VmSockets } from '../api/vm-sockets.js';
import { log } from '../log.js';
import type { VmChannels } from '../vm/clones/types.js';
import type { NodeApiClient } from './node-api-client.js';

export class RelayChannels implements VmChannels {
  private readonly sockets: VmSockets;
  readonly dir: string;

  constructor(
    stateDir: string,
    private readonly client: Pick<NodeApiClient, 'relayGuest'>,
  ) {
    this.sockets = new VmSockets(stateDir);
    this.dir = this.sockets.dir;
  }

  pathFor(vmId: string): string {
    return this.sockets.pathFor(vmId);
  }

  async open(identity: Parameters<VmChannels['open']>[0]): Promise<string> {
    const vmId = identity.vmId;
    const { path, opened } = await this.sockets.open(vmId, (req, res) => this.client.relayGuest(vmId, req, res));
    if (opened) log.debug('relayed guest channel open', { vm: vmId });
    return path;
  }

  async close(vmId: string): Promise<void> {
    await this.sockets.close(vmId);
  }

  async closeAll(): Promise<void> {
    await this.sockets.closeAll();
  }
}
