/**
 * One-time stage-out archives a headnode fetches over its own API channel (HTTP through QEMU's
 * guestfwd), far faster under TCG than guest-file-write's base64 JSON chunks.
 *
 * The guest is hostile: an offer is served only on the channel of the VM it was made for (the
 * socket a request arrives on is the VM's identity, src/api/channels.ts), once, to a GET naming
 * its random token; then it is gone. Its body comes from a producer that the offer bounds to the
 * length it announced, so a headnode never reads more than that.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Actor } from '../scheduler/actor.js';
import { DriverError } from '../errors.js';

/** The path prefix on a guest channel; gcd's own API never uses it. */
export const OFFER_PREFIX = '/copper-stageout/';
/** Where a guest reaches gcd (vm-args.ts: guestfwd 10.0.2.100:80). */
export const GUEST_GCD_ADDR = '10.0.2.100:80';

export class ArchiveOfferError extends DriverError {}

/** Writes the body into `sink`; resolves with the bytes written. */
export type BodyProducer = (sink: BodySink) => Promise<number>;

/** Where a producer writes: each write waits while the headnode is slower. */
export interface BodySink {
  write(data: Buffer): Promise<void>;
}

interface Pending {
  vmId: string;
  length: number;
  produce: BodyProducer;
  settle: (err: Error | undefined, bytes: number) => void;
  timer: NodeJS.Timeout;
}

export interface Offer {
  /** The URL path the headnode GETs (host part: GUEST_GCD_ADDR). */
  path: string;
  /** Settles when the body was sent in full (its length), or failed, expired or was withdrawn. */
  served: Promise<number>;
  /** Withdraw an offer not taken yet (no-op once taken or settled). */
  withdraw(): void;
}

export class ArchiveOffers {
  private readonly pending = new Map<string, Pending>();

  /** Offer `length` bytes from `produce` to VM `vmId`, taken once within `ttlMs`. */
  offer(vmId: string, length: number, produce: BodyProducer, ttlMs = 10 * 60_000): Offer {
    const token = randomBytes(24).toString('hex');
    let settle!: (err: Error | undefined, bytes: number) => void;
    const served = new Promise<number>((resolve, reject) => {
      settle = (err, bytes) => (err ? reject(err) : resolve(bytes));
    });
    served.catch(() => undefined);
    let done = false;
    const once = (err: Error | undefined, bytes: number): void => {
      if (done) return;
      done = true;
      clearTimeout(p.timer);
      this.pending.delete(token);
      settle(err, bytes);
    };
    const p: Pending = {
      vmId,
      length,
      produce,
      settle: once,
      timer: setTimeout(() => once(new ArchiveOfferError('the headnode did not fetch the stage-out archive in time'), 0), ttlMs),
    };
    p.timer.unref();
    this.pending.set(token, p);
    return {
      path: `${OFFER_PREFIX}${token}`,
      served,
      withdraw: () => {
        if (this.pending.get(token) === p) once(new ArchiveOfferError('stage-out archive offer withdrawn'), 0);
      },
    };
  }

  /** Take a request for an offer; false: not one (the API handles it). */
  handle(req: IncomingMessage, res: ServerResponse, actor: Actor): boolean {
    const url = req.url ?? '';
    if (!url.startsWith(OFFER_PREFIX)) return false;
    const token = url.slice(OFFER_PREFIX.length);
    const p = this.pending.get(token);
    // Another VM's token (or a guess) looks like no token at all and leaves the offer standing.
    if (!p || req.method !== 'GET' || actor.kind !== 'guest' || actor.identity.vmId !== p.vmId) {
      res.writeHead(404, { 'content-type': 'text/plain', connection: 'close' }).end('no such offer\n');
      return true;
    }
    this.pending.delete(token); // single use, from its first request on
    clearTimeout(p.timer);
    void this.serve(p, res);
    return true;
  }

  private async serve(p: Pending, res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(p.length), connection: 'close' });
    let sent = 0;
    let closed = false;
    res.on('close', () => {
      closed = true;
    });
    const sink: BodySink = {
      write: async (data: Buffer): Promise<void> => {
        if (closed) throw new ArchiveOfferError('the headnode closed the archive fetch early');
        if (sent + data.length > p.length) throw new ArchiveOfferError(`the archive is longer than the ${p.length} bytes announced`);
        sent += data.length;
        if (!res.write(data)) {
          await new Promise<void>((resolve) => {
            const go = (): void => {
              res.off('drain', go);
              res.off('close', go);
              resolve();
            };
            res.on('drain', go);
            res.on('close', go);
          });
        }
      },
    };
    try {
      await p.produce(sink);
      if (sent !== p.length) throw new ArchiveOfferError(`the archive ended after ${sent} of ${p.length} bytes`);
      await new Promise<void>((resolve) => res.end(resolve));
      p.settle(undefined, sent);
    } catch (err) {
      res.destroy(); // the headnode sees a short body and places nothing
      p.settle(err instanceof Error ? err : new ArchiveOfferError(String(err)), sent);
    }
  }

  /** Withdraw every offer (gcd closing). */
  clear(): void {
    for (const p of [...this.pending.values()]) p.settle(new ArchiveOfferError('gcd is closing'), 0);
  }
}

/** The offers of a channel server, when it has them (a grid node's relayed channels do not). */
export function archiveOffersOf(channels: object): ArchiveOffers | undefined {
  const a = (channels as { archives?: unknown }).archives;
  return a instanceof ArchiveOffers ? a : undefined;
}

/** `{ archives }` when there are offers, `{}` when not (exactOptionalPropertyTypes). */
export function optionalArchives(archives: ArchiveOffers | undefined): { archives?: ArchiveOffers } {
  return archives ? { archives } : {};
}

/** placeHostArchive's last arguments: the offers and the headnode's VM id, when there are offers. */
export function optionalHeadnodeOffers(archives: ArchiveOffers | undefined, headnodeVmId: string): [] | [{ offers: ArchiveOffers; headnodeVmId: string }] {
  return archives ? [{ offers: archives, headnodeVmId }] : [];
}
