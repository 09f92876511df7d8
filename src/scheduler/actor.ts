import type { GuestIdentity } from '../headnodes/types.js';

/** Who asks: the host administrator (admin socket) or a guest VM (its own channel). */
export type Actor = { kind: 'admin' } | { kind: 'guest'; identity: GuestIdentity };

export const ADMIN: Actor = { kind: 'admin' };

/** A guest acts only for its headnode's owner; the admin for everyone. */
export function mayActOn(actor: Actor, jobUser: string): boolean {
  return actor.kind === 'admin' || actor.identity.owner === jobUser;
}
