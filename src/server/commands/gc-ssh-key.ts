/**
 * `gc headnode create --ssh-key FILE` (the files) and `gc headnode ssh-key add|remove|list`:
 * the owner's SSH public keys of a headnode. The key files are read by the client (needFile),
 * where the admin typed the command, never by gcd from its own folder.
 */
import { PermissionError, UsageError } from '../../errors.js';
import { NAME_RE } from '../../headnodes/spec.js';
import type { HeadnodeInfo, HeadnodeManager } from '../../headnodes/types.js';
import { mergeSshKeys, parseSshKey, parseSshKeyFile, removeSshKeys, type SshKey } from '../../headnodes/ssh-keys.js';
import type { ToolRequest, ToolResult } from './tool.js';

export type KeyFiles = { kind: 'keys'; keys: SshKey[] } | { kind: 'needFile'; path: string };

/** The keys of every FILE, or the first file the client has yet to send. */
export function readKeyFiles(req: ToolRequest, files: readonly string[], option: string): KeyFiles {
  const keys: SshKey[] = [];
  for (const f of files) {
    if (f === '') throw new UsageError(`${option} needs a file (a public key, e.g. ~/.ssh/id_ed25519.pub)`);
    const text = req.files[f];
    if (text === undefined) {
      if (req.missing.includes(f)) throw new UsageError(`${option} ${f}: no such file`);
      return { kind: 'needFile', path: f };
    }
    keys.push(...parseSshKeyFile(text, f));
  }
  return { kind: 'keys', keys };
}

/** `ssh -p PORT root@ADDR`, or why there is none. */
export function sshLine(h: HeadnodeInfo): string {
  const s = h.ssh;
  if (s?.addr === undefined || s.port === undefined) return 'no SSH port (the administrator sets GC_SSH_ADDR)';
  const addr = s.addr === '0.0.0.0' ? '<this host>' : s.addr;
  return `ssh -p ${s.port} root@${addr}`;
}

function listing(h: HeadnodeInfo): string {
  const lines = [`headnode ${h.name} (owner ${h.owner}): ${sshLine(h)}`];
  lines.push(`host key: ${h.ssh?.hostKey ?? 'not known yet (made on its first boot)'}`);
  const keys = h.ssh?.keys ?? [];
  if (keys.length === 0) lines.push('no keys: nobody can log in (gc headnode ssh-key add NAME FILE)');
  for (const k of keys) lines.push(`${k.fingerprint}  ${k.comment}`.trimEnd());
  return lines.join('\n') + '\n';
}

/**
 * gc headnode ssh-key add NAME FILE... | remove NAME FILE|SHA256:...|COMMENT... | list NAME.
 * The administrator names any headnode; inside a headnode, only that headnode (NAME may be left out).
 */
export async function sshKeyCommand(req: ToolRequest, headnodes: HeadnodeManager, args: string[]): Promise<ToolResult> {
  const usage = 'gc headnode ssh-key add NAME FILE... | remove NAME FILE|SHA256:FP|COMMENT... | list [NAME]';
  const [verb, ...rest] = args;
  if (verb === undefined || verb === '--help') return { stdout: usage + '\n', stderr: '', exitCode: verb === undefined ? 2 : 0 };
  const guest = req.actor.kind === 'guest' ? req.actor.identity : undefined;
  // In a headnode NAME may be left out (`gc headnode ssh-key add key.pub`): it is always this one.
  const named = guest === undefined || rest[0] === guest.headnode;
  const name = named ? rest[0] : guest.headnode;
  const operands = named ? rest.slice(1) : rest;
  if (name === undefined) throw new UsageError(`usage: ${usage}`);
  // A headnode's name where a file could be too (NAME FILE given in a guest): not this headnode's.
  if (guest && !named && (verb === 'list' ? rest.length >= 1 : rest.length >= 2) && NAME_RE.test(rest[0] ?? '')) {
    throw new PermissionError(`gc headnode ssh-key: only this headnode's keys (${guest.headnode}) may be changed from inside it`);
  }
  const setKeys = headnodes.setSshKeys?.bind(headnodes);
  switch (verb) {
    case 'list':
      return { stdout: listing(await headnodes.get(name)), stderr: '', exitCode: 0 };
    case 'add': {
      if (operands.length === 0) throw new UsageError('gc headnode ssh-key add NAME FILE...: a public key file is required');
      const r = readKeyFiles(req, operands, 'gc headnode ssh-key add');
      if (r.kind === 'needFile') return { stdout: '', stderr: '', exitCode: 0, needFile: r.path };
      if (!setKeys) throw new UsageError('this gcd cannot change SSH keys');
      const info = await setKeys(name, (old) => mergeSshKeys(old, r.keys));
      return { stdout: listing(info), stderr: '', exitCode: 0 };
    }
    case 'remove': {
      if (operands.length === 0) throw new UsageError('gc headnode ssh-key remove NAME FILE|SHA256:FP|COMMENT: which key?');
      if (!setKeys) throw new UsageError('this gcd cannot change SSH keys');
      const fingerprints = new Set<string>();
      const comments: string[] = [];
      const files: string[] = [];
      for (const o of operands) {
        if (o.startsWith('SHA256:')) fingerprints.add(o);
        else if (/^(ssh-|ecdsa-|sk-)/.test(o)) fingerprints.add(parseSshKey(o, 'key').fingerprint);
        else if (o.includes('/') || o.endsWith('.pub')) files.push(o);
        else comments.push(o);
      }
      const r = readKeyFiles(req, files, 'gc headnode ssh-key remove');
      if (r.kind === 'needFile') return { stdout: '', stderr: '', exitCode: 0, needFile: r.path };
      for (const k of r.keys) fingerprints.add(k.fingerprint);
      const info = await setKeys(name, (old) => {
        let keys = [...old];
        if (fingerprints.size > 0) keys = removeSshKeys(keys, { fingerprints });
        for (const c of comments) keys = removeSshKeys(keys, { fingerprints: new Set(), comment: c });
        return keys;
      });
      return { stdout: listing(info), stderr: '', exitCode: 0 };
    }
    default:
      throw new UsageError(`gc headnode ssh-key: unknown verb '${verb}' (add, remove, list)`);
  }
}
