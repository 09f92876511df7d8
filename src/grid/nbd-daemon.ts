/**
 * The server's one qemu-storage-daemon: an NBD server on GC_NBD_ADDR that requires TLS with a
 * pre-shared key (a keys.psk line per node: `name:hexkey`; GnuTLS reads the file at every
 * handshake, so adding or removing a node needs no restart), driven over QMP.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DriverError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { QmpClient, QmpError } from '../vm/qmp.js';
import { assertPskHex, assertPskIdentity } from './snapshot-export-info.js';

export interface NbdDaemonOptions {
  /** Private folder (0700): QMP socket, pid file, log, and psk/keys.psk (0600). */
  dir: string;
  host: string;
  port: number;
  binary?: string;
}

export class NbdDaemon {
  private constructor(
    private readonly o: NbdDaemonOptions,
    private readonly child: ChildProcess,
    readonly qmp: QmpClient,
  ) {}

  get pid(): number | undefined {
    return this.child.pid;
  }

  static pskFile(dir: string): string {
    return join(dir, 'psk', 'keys.psk');
  }

  static async start(o: NbdDaemonOptions): Promise<NbdDaemon> {
    for (const p of [o.dir, o.host]) {
      // QemuOpts splits on commas; our own paths and addresses never need one.
      if (p.includes(',')) throw new DriverError(`NBD daemon: a comma in '${p}' is not supported`);
    }
    await mkdir(join(o.dir, 'psk'), { recursive: true, mode: 0o700 });
    const keys = NbdDaemon.pskFile(o.dir);
    // An empty key file still has to exist: the TLS object refuses to load without it.
    const fh = await open(keys, 'a', 0o600);
    await fh.close();
    const qmpPath = join(o.dir, 'qmp.sock');
    const pidFile = join(o.dir, 'qsd.pid');
    await killStale(pidFile, qmpPath);
    await rm(qmpPath, { force: true });
    const logFile = join(o.dir, 'qsd.log');
    const logFh = await open(logFile, 'w', 0o600);
    const args = [
      '--object',
      `tls-creds-psk,id=tls0,endpoint=server,dir=${join(o.dir, 'psk')}`,
      '--nbd-server',
      `addr.type=inet,addr.host=${o.host},addr.port=${o.port},tls-creds=tls0`,
      '--chardev',
      `socket,id=qmp0,path=${qmpPath},server=on,wait=off`,
      '--monitor',
      'chardev=qmp0',
      '--pidfile',
      pidFile,
    ];
    const child = spawn(o.binary ?? 'qemu-storage-daemon', args, { stdio: ['ignore', logFh.fd, logFh.fd] });
    await logFh.close();
    let exited = false;
    child.on('exit', () => (exited = true));
    const spawnError = new Promise<Error>((resolve) => child.on('error', resolve));
    try {
      const qmp = await Promise.race([
        QmpClient.connect(qmpPath, { deadline: Date.now() + 10_000, isAlive: () => !exited }),
        spawnError.then((e) => {
          throw e;
        }),
      ]);
      log.info(`NBD exports on ${o.host}:${o.port} (qemu-storage-daemon pid ${child.pid ?? '?'})`);
      return new NbdDaemon(o, child, qmp);
    } catch (err) {
      child.kill('SIGKILL');
      const tail = (await readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' ');
      throw new DriverError(`qemu-storage-daemon on ${o.host}:${o.port} did not start: ${tail || errorMessage(err)}`, { cause: err });
    }
  }

  /** Let `node` in with `pskHex` (replaces its former key). */
  async allowNode(node: string, pskHex: string): Promise<void> {
    assertPskIdentity(node);
    assertPskHex(pskHex);
    await this.rewriteKeys((lines) => [...lines.filter((l) => !l.startsWith(`${node}:`)), `${node}:${pskHex}`]);
  }

  /** From the next connection on, `node` is refused (exports it already opened stay open until released). */
  async revokeNode(node: string): Promise<void> {
    assertPskIdentity(node);
    await this.rewriteKeys((lines) => lines.filter((l) => !l.startsWith(`${node}:`)));
  }

  /** Open `file` read-only as node `nodeName` and export it as `name`. */
  async exportFile(id: string, nodeName: string, file: string): Promise<void> {
    await this.qmp.execute('blockdev-add', {
      'node-name': nodeName,
      driver: 'raw',
      'read-only': true,
      file: { driver: 'file', filename: file, 'read-only': true },
    });
    try {
      await this.qmp.execute('block-export-add', { type: 'nbd', id, 'node-name': nodeName, name: id, writable: false });
    } catch (err) {
      await this.qmp.execute('blockdev-del', { 'node-name': nodeName }).catch(() => undefined);
      throw err;
    }
  }

  /** Remove an export (dropping any client still reading it) and close its file. */
  async unexportFile(id: string, nodeName: string): Promise<void> {
    try {
      await this.qmp.execute('block-export-del', { id, mode: 'hard' });
    } catch (err) {
      if (!(err instanceof QmpError)) throw err;
    }
    // The export goes away asynchronously; the node is busy until it has.
    for (let i = 0; ; i++) {
      try {
        await this.qmp.execute('blockdev-del', { 'node-name': nodeName });
        return;
      } catch (err) {
        if (!(err instanceof QmpError) || /Failed to find node/.test(err.desc)) return;
        if (i >= 100) throw err;
        await sleep(20);
      }
    }
  }

  /**
   * Bytes the daemon has read from files since it started: what it sent to clients (plus the
   * few bytes of keys.psk per handshake). Exports have anonymous block backends that
   * query-blockstats does not list, so this is the process's own read count.
   */
  async bytesRead(): Promise<number> {
    const io = await readFile(`/proc/${this.child.pid ?? 0}/io`, 'utf8').catch(() => '');
    const m = /^rchar:\s*(\d+)/m.exec(io);
    if (!m) throw new DriverError('qemu-storage-daemon: its read count is not available');
    return Number(m[1]);
  }

  async stop(): Promise<void> {
    this.qmp.destroy();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
      this.child.kill('SIGTERM');
      await Promise.race([gone, sleep(3000)]);
      if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    }
    await rm(join(this.o.dir, 'qmp.sock'), { force: true });
    await rm(join(this.o.dir, 'qsd.pid'), { force: true });
  }

  private async rewriteKeys(edit: (lines: string[]) => string[]): Promise<void> {
    const file = NbdDaemon.pskFile(this.o.dir);
    const lines = (await readFile(file, 'utf8').catch(() => ''))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '');
    const tmp = `${file}.tmp-${process.pid}`;
    await writeFile(tmp, edit(lines).join('\n') + '\n', { mode: 0o600 });
    await rename(tmp, file);
  }
}

/** A daemon left by a gcd that was killed still holds the port: end it (only if it is ours). */
async function killStale(pidFile: string, qmpPath: string): Promise<void> {
  const pid = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
  if (!Number.isInteger(pid) || pid <= 1) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes('qemu-storage-daemon') || !cmdline.includes(qmpPath)) return;
  log.warn(`ending a qemu-storage-daemon left by an earlier gcd (pid ${pid})`);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 100; i++) {
    if ((await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')) === '') return;
    await sleep(20);
  }
}
