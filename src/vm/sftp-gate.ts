/**
 * gcd's side of the shared volume: one listening Unix socket per owner
 * (`<state>/run/sftp/<owner>.sock`, root only). QEMU's guestfwd for 10.0.2.101:22 connects its
 * guest's stream to the owner's socket (vm-args.ts), and for each connection gcd runs one
 * sandboxed sftp-server session on it (sftpSandboxArgv), detached: a session outlives a gcd
 * restart and ends when its connection does. The number of sessions per owner is capped by lock
 * files the sessions hold (not by a count in gcd, which a restart would forget).
 */
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { sftpGateSocket, sftpSandboxArgv, sftpSlotsDir } from './vm-args.js';
import { vmUidsEnabled } from './vm-uid.js';

const OWNER = /^[A-Za-z0-9_.@-]+$/;

export class SftpGate {
  private readonly servers = new Map<string, { server: Server; path: string }>();
  /** Last refusal logged per owner: a flood of connections is one line a minute. */
  private readonly refusedAt = new Map<string, number>();

  /**
   * @param sharedDir `<state>/shared`: each owner's volume is a folder in it.
   * @param maxSessions concurrent sessions per owner (GC_SHARED_MAX_SESSIONS).
   */
  constructor(
    readonly sharedDir: string,
    private readonly maxSessions: number,
  ) {}

  /** Serve every owner that has a volume (at gcd start: clones and re-attached headnodes need them). */
  async serveAll(): Promise<void> {
    const owners = await readdir(this.sharedDir, { withFileTypes: true }).catch(() => []);
    for (const d of owners) if (d.isDirectory() && OWNER.test(d.name)) await this.serve(d.name);
    // Each headnode's own socket (its uid's), for it and its clones after a gcd restart.
    const headnodes = join(dirname(this.sharedDir), 'headnodes');
    for (const name of await readdir(headnodes).catch(() => [] as string[])) {
      try {
        const rec = JSON.parse(await readFile(join(headnodes, name, 'headnode.json'), 'utf8')) as { vmUid?: unknown; spec?: { owner?: unknown } };
        const owner = rec.spec?.owner;
        if (typeof rec.vmUid === 'number' && typeof owner === 'string' && OWNER.test(owner) && owners.some((d) => d.name === owner)) {
          await this.serve(owner, rec.vmUid);
        }
      } catch {
        // no record (yet): nothing to serve
      }
    }
  }

  /**
   * Listen on the owner's socket (once); returns its path. With `vmUid`: the socket the VMs of
   * that uid connect to, owned by it (0600) in a folder every VM uid may traverse but not list.
   */
  async serve(owner: string, vmUid?: number): Promise<string> {
    const dir = join(this.sharedDir, owner);
    const path = sftpGateSocket(dir, vmUid);
    const key = vmUid !== undefined ? `${owner}#${vmUid}` : owner;
    const existing = this.servers.get(key);
    if (existing) return existing.path;
    const uids = vmUidsEnabled();
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    chmodSync(dirname(path), uids ? 0o711 : 0o700);
    mkdirSync(sftpSlotsDir(dir), { recursive: true, mode: 0o700 });
    rmSync(path, { force: true });
    const server = createServer((sock) => this.session(owner, dir, sock));
    server.on('error', (e) => log.warn(`sftp gate of ${owner}: ${errorMessage(e)}`));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    if (vmUid !== undefined && uids) chownSync(path, vmUid, 0);
    this.servers.set(key, { server, path });
    return path;
  }

  private session(owner: string, dir: string, sock: Socket): void {
    sock.on('error', () => undefined);
    try {
      const [cmd, ...args] = sftpSandboxArgv(dir, this.maxSessions);
      // The connection itself is the session's stdin and stdout (its fd is passed on).
      const child = spawn(cmd ?? 'sh', args, { stdio: [sock, sock, 'ignore'], detached: true });
      child.on('error', (e) => log.warn(`sftp session of ${owner}: ${errorMessage(e)}`));
      child.on('exit', (code) => {
        if (code !== 75 || Date.now() - (this.refusedAt.get(owner) ?? 0) < 60_000) return;
        this.refusedAt.set(owner, Date.now());
        log.warn(`sftp session of ${owner} refused: ${this.maxSessions} sessions already open (GC_SHARED_MAX_SESSIONS)`);
      });
      child.unref();
    } finally {
      // gcd's copy of the connection: the session holds its own.
      sock.destroy();
    }
  }

  async closeAll(): Promise<void> {
    for (const [owner, s] of this.servers) {
      this.servers.delete(owner);
      await new Promise<void>((r) => s.server.close(() => r()));
      rmSync(s.path, { force: true });
    }
  }
}
