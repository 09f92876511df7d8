/**
 * Dashboard log-in tokens: `<payload>.<mac>`, both base64url; the payload is JSON
 * `{ u: user, a: admin?, e: expiry (s since 1970) }` and the MAC its HMAC-SHA256 under a
 * secret kept in `$GC_STATE_DIR/web-secret` (0600, made on first use). Only gcd mints them:
 * `gc web token` as root on the host (admin socket) or in a headnode (its channel proves the owner).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PermissionError } from '../errors.js';

export interface WebIdentity {
  user: string;
  admin: boolean;
  /** Expiry, seconds since 1970. */
  expiresAt: number;
}

/** A token that is malformed, forged or expired: the dashboard answers 401 and shows the reason. */
export class BadTokenError extends PermissionError {
  constructor(readonly reason: 'malformed' | 'bad signature' | 'expired') {
    super(`dashboard token refused: ${reason}`);
  }
}

const USER_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

/** The secret in `<stateDir>/web-secret`, created (32 random bytes, mode 0600) when absent. */
export function loadWebSecret(stateDir: string): Buffer {
  const file = join(stateDir, 'web-secret');
  if (!existsSync(file)) {
    // 'wx': two gcds racing cannot both write it; the loser reads the winner's.
    try {
      writeFileSync(file, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  chmodSync(file, 0o600);
  return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
}

export class WebTokens {
  constructor(
    private readonly secret: Buffer,
    private readonly now: () => number = () => Date.now(),
  ) {}

  private mac(payload: string): Buffer {
    return createHmac('sha256', this.secret).update(payload).digest();
  }

  mint(user: string, admin: boolean, ttlSec: number): string {
    if (!USER_RE.test(user)) throw new PermissionError(`not a user name: '${user}'`);
    const e = Math.floor(this.now() / 1000) + ttlSec;
    const payload = Buffer.from(JSON.stringify({ u: user, ...(admin ? { a: 1 } : {}), e })).toString('base64url');
    return `${payload}.${this.mac(payload).toString('base64url')}`;
  }

  verify(token: string): WebIdentity {
    const m = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(token.trim());
    if (!m) throw new BadTokenError('malformed');
    const given = Buffer.from(m[2], 'base64url');
    const want = this.mac(m[1]);
    if (given.length !== want.length || !timingSafeEqual(given, want)) throw new BadTokenError('bad signature');
    let body: { u?: unknown; a?: unknown; e?: unknown };
    try {
      body = JSON.parse(Buffer.from(m[1], 'base64url').toString('utf8')) as typeof body;
    } catch {
      throw new BadTokenError('malformed');
    }
    if (typeof body.u !== 'string' || !USER_RE.test(body.u) || typeof body.e !== 'number') throw new BadTokenError('malformed');
    if (body.e * 1000 <= this.now()) throw new BadTokenError('expired');
    return { user: body.u, admin: body.a === 1, expiresAt: body.e };
  }
}
