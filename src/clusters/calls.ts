/**
 * The cluster calls as gcd serves them, one implementation for both doors: the typed routes
 * (/v1/clusters/..., api/cluster-routes.ts) and the `gc clone|clones|kill|whoami` commands
 * (server/commands/gc-clone.ts). Who speaks is the actor (the socket the request came on):
 * inside a VM a call acts on that VM's own cluster and may not name another headnode; on the
 * host the administrator names the headnode and acts as that headnode.
 */
import { UsageError } from '../errors.js';
import type { Actor } from '../scheduler/actor.js';
import type { ClusterCaller, ClusterService } from './service.js';
import type { CloneInfo, CloneUsageRow, KillSelector, WhoAmI } from './types.js';

/** What the calls need of the service (a stand-in in unit tests). */
export type ClusterOps = Pick<ClusterService, 'clone' | 'list' | 'listAll' | 'usage' | 'kill' | 'whoami'>;

export interface CloneCall {
  n: number;
  ttlSec?: number;
  /** The administrator's: whose headnode to fork. A guest may not name one. */
  headnode?: string;
}

export interface ListCall {
  headnode?: string;
  /** Every cluster (administrator only). */
  all?: boolean;
}

/** The caller a request acts as; `what` names the call in messages (`gc clone`). */
export function clusterCaller(actor: Actor, what: string, headnode: string | undefined): ClusterCaller {
  if (actor.kind === 'guest') {
    if (headnode !== undefined) throw new UsageError(`${what}: --headnode is for the administrator on the host; inside a VM gc acts on its own cluster`);
    const id = actor.identity;
    return { kind: id.kind, vmId: id.vmId, headnode: id.headnode };
  }
  if (!headnode) throw new UsageError(`${what}: on the host, name the headnode: ${what} --headnode NAME ...`);
  return { kind: 'headnode', vmId: headnode, headnode, admin: true };
}

export class ClusterCalls {
  constructor(private readonly service: ClusterOps) {}

  clone(actor: Actor, c: CloneCall): Promise<CloneInfo[]> {
    const who = clusterCaller(actor, 'gc clone', c.headnode);
    return this.service.clone(who, c.ttlSec !== undefined ? { n: c.n, ttlSec: c.ttlSec } : { n: c.n });
  }

  list(actor: Actor, c: ListCall): Promise<CloneInfo[]> {
    if (c.all) {
      if (actor.kind === 'guest') throw new UsageError('gc clones --all is for the administrator on the host');
      return this.service.listAll();
    }
    const who = clusterCaller(actor, 'gc clones', c.headnode);
    return this.service.list(who.headnode, { admin: who.admin === true });
  }

  /** Live clones per user and the limits: a guest sees its owner's row, the administrator everybody's. */
  usage(actor: Actor): CloneUsageRow[] {
    return this.service.usage(actor.kind === 'guest' ? actor.identity.owner : undefined);
  }

  async kill(actor: Actor, sel: KillSelector, headnode?: string): Promise<CloneInfo[]> {
    const { killed } = await this.service.kill(clusterCaller(actor, 'gc kill', headnode), sel);
    return killed;
  }

  whoami(actor: Actor, headnode?: string): WhoAmI {
    return this.service.whoami(clusterCaller(actor, 'gc whoami', headnode));
  }
}
