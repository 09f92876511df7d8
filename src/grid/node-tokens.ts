/**
 * One secret per compute node, minted by the server's administrator (`gc node token NAME`) and
 * kept in `$GC_STATE_DIR/grid/node-tokens/<name>` (mode 0600, folder 0700). A node presents it
 * as GC_NODE_TOKEN to the server's node API; the server presents the same node's token to that
 * node's control listener. Compared in constant time (hashes of equal length).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../errors.js';

/** A node's registry name, as GRID.md has it (host names). */
export const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9-]{0,62}$/;

export function checkNodeName(name: string): string {
  if (!NODE_NAME.test(name)) throw new UsageError(`invalid node name '${name.slice(0, 70)}' (letters, digits, -)`);
  return name;
}

export class NodeTokens {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'grid', 'node-tokens');
  }

  /** A fresh token for the node (an earlier one stops working). */
  async mint(name: string): Promise<string> {
    checkNodeName(name);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    const token = randomBytes(32).toString('base64url');
    const file = join(this.dir, name);
    const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, `${token}\n`, { mode: 0o600, flag: 'wx' });
    await rename(tmp, file);
    return token;
  }

  /** The node's token, or undefined when none was minted. */
  async get(name: string): Promise<string | undefined> {
    if (!NODE_NAME.test(name)) return undefined;
    try {
      return (await readFile(join(this.dir, name), 'utf8')).trim() || undefined;
    } catch {
      return undefined;
    }
  }

  /** Names of the nodes that have a token. */
  async list(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => NODE_NAME.test(n)).sort();
  }

  async revoke(name: string): Promise<void> {
    checkNodeName(name);
    await rm(join(this.dir, name), { force: true });
  }

  /** True when `presented` is the node's token. */
  async verify(name: string, presented: string): Promise<boolean> {
    return sameToken(presented, await this.get(name));
  }
}

/** `presented` is `want`, compared in constant time; false when there is nothing to want. */
export function sameToken(presented: string, want: string | undefined): boolean {
  // Hash both: timingSafeEqual needs equal lengths, and the length must not leak either.
  const a = createHash('sha256')
    .update(want ?? randomBytes(32))
    .digest();
  const b = createHash('sha256').update(presented).digest();
  return timingSafeEqual(a, b) && want !== undefined;
}

/** The headers a node (or the server, to a node) authenticates with. */
export function nodeAuthHeaders(name: string, token: string): Record<string, string> {
  return { authorization: `Bearer ${token}`, 'x-copper-node': name };
}

/** The node name and token of a request, or undefined when it carries none. */
export function presentedCredentials(headers: Record<string, string | string[] | undefined>): { name: string; token: string } | undefined {
  const name = headers['x-copper-node'];
  const auth = headers.authorization;
  if (typeof name !== 'string' || typeof auth !== 'string') return undefined;
  const m = /^Bearer ([A-Za-z0-9_-]{16,128})$/.exec(auth);
  if (!m || !NODE_NAME.test(name)) return undefined;
  return { name, token: m[1] };
}
