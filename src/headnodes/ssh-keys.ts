/**
 * The owner's SSH public keys, as `gc headnode create --ssh-key FILE` and `gc headnode ssh-key`
 * take them: checked here (gcd writes them into the headnode, so nothing but a plain key line
 * may pass), named by their SHA256 fingerprint as `ssh-keygen -l` prints it.
 */
import { createHash } from 'node:crypto';
import { UsageError } from '../errors.js';

/** Key types OpenSSH's sshd accepts for users (DSA is gone from OpenSSH 9.8). */
const KEY_TYPES = new Set([
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);

/** Most keys a headnode keeps, and the longest line (an RSA 16384-bit key is ~2.8 kB). */
export const MAX_SSH_KEYS = 32;
const MAX_LINE = 4096;

/** A key that is not an OpenSSH public key line, with where it came from. */
export class SshKeyError extends UsageError {
  constructor(
    readonly source: string,
    readonly reason: string,
  ) {
    super(`${source}: ${reason}`);
  }
}

export interface SshKey {
  /** `TYPE BASE64 [COMMENT]`, as written into authorized_keys. */
  line: string;
  type: string;
  /** `SHA256:...` (base64 without padding), as `ssh-keygen -l` shows. */
  fingerprint: string;
  comment: string;
}

/** One key line checked: the type, a base64 blob that starts with the same type, a plain comment. */
export function parseSshKey(line: string, source: string): SshKey {
  const text = line.trim();
  if (text.length > MAX_LINE) throw new SshKeyError(source, `a key line longer than ${MAX_LINE} characters`);
  if (/PRIVATE KEY/.test(text)) throw new SshKeyError(source, 'this is a private key: give the public one (the .pub file)');
  const m = /^(\S+) ([A-Za-z0-9+/]+={0,2})(?: ([^\0\r\n]*))?$/.exec(text);
  if (!m) throw new SshKeyError(source, 'not an OpenSSH public key line (TYPE BASE64 [COMMENT]; options such as command= are not taken)');
  const [, type, b64, comment = ''] = m;
  if (!KEY_TYPES.has(type)) throw new SshKeyError(source, `key type '${type}' is not taken (use ${[...KEY_TYPES].slice(0, 3).join(', ')}, ...)`);
  const blob = Buffer.from(b64, 'base64');
  // The blob names its own type first (uint32 length + name): a truncated or pasted-wrong key fails here.
  const n = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (n !== type.length || blob.subarray(4, 4 + n).toString('latin1') !== type) {
    throw new SshKeyError(source, `the key data does not match its type '${type}' (truncated or damaged?)`);
  }
  const fingerprint = 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
  return { line: comment ? `${type} ${b64} ${comment.trim()}` : `${type} ${b64}`, type, fingerprint, comment: comment.trim() };
}

/** Every key of a file's text (an authorized_keys-like file: blank lines and # comments skipped). */
export function parseSshKeyFile(text: string, source: string): SshKey[] {
  const keys: SshKey[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    keys.push(parseSshKey(line, `${source} line ${i + 1}`));
  });
  if (keys.length === 0) throw new SshKeyError(source, 'no public key in it');
  return keys;
}

/** `old` with `add` appended, keys already there (same fingerprint) not twice; checks the count. */
export function mergeSshKeys(old: readonly string[], add: readonly SshKey[]): string[] {
  const have = new Set(old.map((l) => parseSshKey(l, 'record').fingerprint));
  const out = [...old];
  for (const k of add) {
    if (have.has(k.fingerprint)) continue;
    have.add(k.fingerprint);
    out.push(k.line);
  }
  if (out.length > MAX_SSH_KEYS) throw new UsageError(`a headnode keeps at most ${MAX_SSH_KEYS} SSH keys`);
  return out;
}

/**
 * `old` without the keys `which` names: a fingerprint (`SHA256:...`), a key line (or a file's
 * keys, given as lines), or a comment. Throws when nothing matches, so a typo is not a silent no-op.
 */
export function removeSshKeys(old: readonly string[], which: { fingerprints: ReadonlySet<string>; comment?: string }): string[] {
  const keep = old.filter((l) => {
    const k = parseSshKey(l, 'record');
    return !(which.fingerprints.has(k.fingerprint) || (which.comment !== undefined && k.comment === which.comment));
  });
  if (keep.length === old.length) throw new UsageError('no such key on this headnode (see gc headnode ssh-key list NAME)');
  return keep;
}
