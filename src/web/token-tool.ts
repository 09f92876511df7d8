import { PermissionError, UsageError } from '../errors.js';
import type { CliAnswer, CliCall } from '../api/cli-call.js';
import type { WebTokens } from './token.js';

const DEFAULT_TTL_SEC = 12 * 3600;
const MAX_TTL_SEC = 30 * 24 * 3600;

/** `1h`, `30m`, `7d`, `90` (seconds). */
function parseTtl(text: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text);
  if (!m) throw new UsageError(`--ttl: want a duration like 90, 30m, 12h or 7d, got '${text}'`);
  const sec = Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  if (sec < 1 || sec > MAX_TTL_SEC) throw new UsageError(`--ttl: between 1 second and 30 days, got '${text}'`);
  return sec;
}

/**
 * `gc web token [--user U] [--admin] [--ttl DUR]`: a signed, expiring dashboard log-in.
 * On the host (admin socket) root names the user or asks for an admin token; in a headnode
 * the token is always for that headnode's owner, as the channel proves, and never admin.
 */
export function webTokenTool(tokens: WebTokens, webUrl: () => string | undefined): (req: CliCall) => Promise<CliAnswer> {
  return async (req) => {
    const [, verb, ...rest] = req.argv;
    if (verb !== 'token') throw new UsageError('usage: gc web token [--user U] [--admin] [--ttl DUR]');
    let user: string | undefined;
    let admin = false;
    let ttl = DEFAULT_TTL_SEC;
    for (let i = 0; i < rest.length; i++) {
      const a = rest[i];
      const value = (): string => {
        const v = rest[++i];
        if (v === undefined) throw new UsageError(`gc web token: ${a} needs a value`);
        return v;
      };
      if (a === '--user') user = value();
      else if (a === '--admin') admin = true;
      else if (a === '--ttl') ttl = parseTtl(value());
      else throw new UsageError(`gc web token: unknown option '${a}'`);
    }
    if (req.actor.kind === 'guest') {
      const owner = req.actor.identity.owner;
      if (admin) throw new PermissionError('gc web token --admin: only the administrator (on the host) may mint admin tokens');
      if (user !== undefined && user !== owner) throw new PermissionError(`gc web token: a headnode mints tokens for its owner (${owner}) only`);
      user = owner;
    } else if (user === undefined) {
      if (!admin) throw new UsageError('gc web token: on the host, say --user USER or --admin');
      user = 'root';
    }
    const token = tokens.mint(user, admin, ttl);
    const url = webUrl();
    const hint = url ? `open ${url}/?token=${token}\n` : 'the dashboard is off: set GC_WEB_ADDR for gcd\n';
    return { stdout: `${token}\n`, stderr: hint, exitCode: 0 };
  };
}
