/**
 * The grid relay as a compute node (`gcd --node`) composes it. In order:
 *   const relay = nodeRelay(settings, node);                 // client + clone channels
 *   const inner = new QemuDriver({ ..., channels: relay.channels });
 *   const driver = relay.driver(inner, cache);               // NodeDriver
 *   ... new Scheduler({ driver, ... }) ...
 *   const controlUrl = await relay.startControl(scheduler.localRunning(), driver); // -> registry record
 *   ... on the way down: await relay.close();
 */
import { join } from 'node:path';
import type { Settings } from '../config/settings.js';
import type { Driver } from '../drivers/driver.js';
import { UsageError } from '../errors.js';
import type { LiveJobs } from '../scheduler/live-jobs.js';
import type { StopReason } from '../scheduler/runner.js';
import { NodeApiClient } from './node-api-client.js';
import { NodeControl } from './node-control.js';
import { NodeDriver, type SnapshotCacheLike } from './node-driver.js';
import { RelayChannels } from './relay-channels.js';

export interface NodeRelay {
  client: NodeApiClient;
  /** The clones' guest channels (give them to the local driver as its `channels`). */
  channels: RelayChannels;
  driver(inner: Driver, cache: SnapshotCacheLike): NodeDriver;
  /** Listen on GC_NODE_CONTROL_ADDR; the URL goes into the node's registry record (controlUrl). */
  startControl(running: { live: LiveJobs; cancel: (id: string, reason: StopReason) => boolean }, clones: NodeDriver): Promise<string>;
  close(): Promise<void>;
}

export function nodeRelay(settings: Pick<Settings, 'stateDir' | 'serverUrl' | 'nodeToken' | 'nodeControlAddr'>, node: string): NodeRelay {
  const { serverUrl, nodeToken } = settings;
  if (!serverUrl) throw new UsageError('a compute node needs GC_SERVER_URL (the server’s node API)');
  if (!nodeToken) throw new UsageError(`a compute node needs GC_NODE_TOKEN (on the server: gc node token ${node})`);
  const client = new NodeApiClient({ serverUrl, node, token: nodeToken });
  const channels = new RelayChannels(settings.stateDir, client);
  let control: NodeControl | undefined;
  return {
    client,
    channels,
    driver: (inner, cache) => new NodeDriver({ node, inner, cache, server: client, outgoingDir: join(settings.stateDir, 'grid', 'outgoing') }),
    async startControl(running, clones) {
      if (!settings.nodeControlAddr) throw new UsageError('a compute node needs GC_NODE_CONTROL_ADDR (where the server reaches it for gcqdel, gcqsig, ...)');
      control = new NodeControl({ addr: settings.nodeControlAddr, node, token: nodeToken, running, clones });
      return control.listen();
    },
    async close() {
      await control?.close();
      await channels.closeAll();
    },
  };
}
