/**
 * SSH into a headnode: its port on the admin's address (GC_SSH_ADDR), and the owner's keys
 * installed in it. The port is a QEMU hostfwd of the headnode's own QEMU (vm-args.ts
 * sshForward), taken from GC_SSH_PORTS when the headnode is created and kept in its record for
 * its life, so the user's `ssh -p PORT` line never changes. The keys live in the record
 * (spec.sshKeys) and gcd writes them into the guest at every boot and on every change
 * (guest program ssh-keys), so the record is the truth and a stopped headnode can be changed.
 */
import { createServer } from 'node:net';
import { StateError } from '../errors.js';
import type { AgentClient } from '../vm/agent.js';
import { GUEST_SSH_KEYS } from '../vm/guest-programs.js';
import { parseSshKey } from './ssh-keys.js';

export interface SshSettings {
  /** GC_SSH_ADDR; undefined: headnodes get no SSH port. */
  addr: string | undefined;
  ports: { first: number; last: number };
}

/** What `gc headnode list`/`ssh-key list` show of a headnode's SSH access. */
export interface SshAccessInfo {
  /** Where to connect (`ssh -p port root@addr`); absent while GC_SSH_ADDR is unset. */
  addr?: string;
  port?: number;
  /** The headnode's host key fingerprint (SHA256:...), known once it has booted. */
  hostKey?: string;
  /** Fingerprints and comments of the keys that may log in. */
  keys: Array<{ fingerprint: string; comment: string }>;
}

/** Whether addr:port can be listened on now (another program, or a headnode of another state folder, may hold it). */
export function portFree(addr: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen({ host: addr, port, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** Why nothing can listen on addr at all (not an address of this host), or undefined. */
function addressProblem(addr: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    s.listen({ host: addr, port: 0, exclusive: true }, () => s.close(() => resolve(undefined)));
  });
}

/** The first port of the range no headnode has and nothing listens on; StateError when all are taken. */
export async function pickSshPort(ssh: SshSettings & { addr: string }, taken: ReadonlySet<number>): Promise<number> {
  const bad = await addressProblem(ssh.addr);
  if (bad !== undefined) throw new StateError(`GC_SSH_ADDR=${ssh.addr}: cannot listen there (${bad}); is it an address of this host?`);
  for (let p = ssh.ports.first; p <= ssh.ports.last; p++) {
    if (!taken.has(p) && (await portFree(ssh.addr, p))) return p;
  }
  throw new StateError(`no free SSH port left in GC_SSH_PORTS=${ssh.ports.first}-${ssh.ports.last} on ${ssh.addr}`);
}

/** The guest accounts that get the keys: root, and the owner's account if the headnode has one. */
export function keyAccounts(owner: string): string[] {
  return owner === 'root' ? ['root'] : ['root', owner];
}

/**
 * Replace the keys gcd manages in a running guest (root's and the owner's) and read back its
 * host key line (`ssh-ed25519 AAAA... root@NAME`), undefined if the guest has none yet.
 */
export async function installSshKeys(agent: AgentClient, owner: string, keys: readonly string[], timeoutMs = 60_000): Promise<string | undefined> {
  const input = Buffer.from(keys.map((k) => `${k}\n`).join(''));
  const st = await agent.run(GUEST_SSH_KEYS, keyAccounts(owner), { input, timeoutMs });
  if (st.exitCode !== 0) {
    const why = st.err?.toString('utf8').trim() || (st.signal !== null ? `signal ${st.signal}` : `exit ${st.exitCode ?? '?'}`);
    throw new StateError(`installing SSH keys in the headnode failed: ${why}`);
  }
  const m = /^hostkey (.+)$/m.exec(st.out?.toString('utf8') ?? '');
  return m ? m[1].trim() : undefined;
}

/** Fingerprint of a host key line, or undefined when it does not parse. */
export function hostKeyFingerprint(line: string | undefined): string | undefined {
  if (line === undefined) return undefined;
  try {
    return parseSshKey(line, 'host key').fingerprint;
  } catch {
    return undefined;
  }
}

export function sshAccessInfo(ssh: SshSettings, rec: { sshPort?: number; sshHostKey?: string; spec: { sshKeys?: string[] } }): SshAccessInfo {
  const info: SshAccessInfo = {
    keys: (rec.spec.sshKeys ?? []).map((l) => {
      const k = parseSshKey(l, 'record');
      return { fingerprint: k.fingerprint, comment: k.comment };
    }),
  };
  if (ssh.addr !== undefined && rec.sshPort !== undefined) {
    info.addr = ssh.addr;
    info.port = rec.sshPort;
  }
  const fp = hostKeyFingerprint(rec.sshHostKey);
  if (fp !== undefined) info.hostKey = fp;
  return info;
}
