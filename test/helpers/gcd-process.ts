import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setting } from '../../src/config/settings.js';
import { unmountSharedVolumes } from '../../src/vm/shared-volumes.js';
import { removeStateCgroups } from '../../src/vm/vm-cgroup.js';

/** The repository root, from dist/test/helpers. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = join(ROOT, 'bin');

export interface ToolRun {
  stdout: string;
  stderr: string;
  status: number;
}

/** A gcd started as a real process on a fresh state folder. */
export class GcdProcess {
  proc: ChildProcess | undefined;
  log = '';
  readonly env: NodeJS.ProcessEnv;

  constructor(
    extraEnv: NodeJS.ProcessEnv,
    readonly stateDir = mkdtempSync(join(tmpdir(), 'copper-gcd-')),
  ) {
    this.env = { ...process.env, GC_STATE_DIR: stateDir, GC_LOG_LEVEL: 'info', ...extraEnv };
  }

  async start(): Promise<void> {
    this.log = '';
    this.proc = spawn(process.execPath, [join(BIN, 'gcd.js')], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (this.log.includes('gcd ready')) return;
      if (this.proc.exitCode !== null) throw new Error(`gcd exited: ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`gcd did not become ready: ${this.log}`);
  }

  /** `input`: what the tool reads on stdin (a pipe); without it stdin is an empty pipe. */
  tool(name: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): ToolRun {
    const r = spawnSync(process.execPath, [join(BIN, `${name}.js`), ...args], {
      ...(opts.input !== undefined ? { input: opts.input } : {}),
      env: { ...this.env, ...opts.env },
      cwd: opts.cwd ?? this.stateDir,
      encoding: 'utf8',
      timeout: 900_000,
    });
    return { stdout: r.stdout, stderr: r.stderr, status: r.status ?? -1 };
  }

  async toolAsync(name: string, args: string[], opts: { cwd?: string } = {}): Promise<ToolRun> {
    return new Promise((res) => {
      const p = spawn(process.execPath, [join(BIN, `${name}.js`), ...args], { env: this.env, cwd: opts.cwd ?? this.stateDir });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.on('exit', (code) => res({ stdout, stderr, status: code ?? -1 }));
    });
  }

  async kill9(): Promise<void> {
    const p = this.proc!;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
    // The embedded Redis gets SIGTERM from the kernel (pdeathsig); let it flush and exit.
    const pidFile = join(this.stateDir, 'redis', 'redis.pid');
    for (let i = 0; i < 100 && existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 50));
  }

  async stop(): Promise<number | null> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return p?.exitCode ?? null;
    const gone = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
    p.kill('SIGTERM');
    return gone;
  }

  async cleanup(): Promise<void> {
    await this.stop();
    // Quota'd /shared volumes are loop mounts inside the state folder; VM cgroups sit outside it.
    await unmountSharedVolumes(this.stateDir);
    await removeStateCgroups(this.stateDir);
    rmSync(this.stateDir, { recursive: true, force: true });
    // Guest RAM lives on tmpfs beside the state folder: snapshots of jobs still queued when the
    // test ended (e.g. cron firings) would otherwise stay in memory after the test.
    rmSync(setting('ramDir', this.env), { recursive: true, force: true });
  }

  /** A shell command inside a headnode, as root (the administrator's `gc headnode exec`). */
  inHeadnode(hn: string, script: string, timeoutSec = 600): ToolRun {
    return this.tool('gc', ['headnode', 'exec', hn, '--timeout', String(timeoutSec), '--', 'sh', '-c', script]);
  }

  /** Create and start headnodes [name, owner] through `gc`, as the administrator does. */
  startHeadnodes(specs: ReadonlyArray<readonly [string, string]>, memMiB: number): void {
    for (const [name, owner] of specs) {
      const c = this.tool('gc', ['headnode', 'create', name, '--owner', owner, '--mem', String(memMiB)]);
      expect(c.status, c.stderr).to.equal(0);
      const s = this.tool('gc', ['headnode', 'start', name]);
      expect(s.status, s.stderr).to.equal(0);
    }
  }

  /** Processes whose command line names this state folder (QEMU, bwrap, sftp-server...). */
  processesLeft(): string {
    return spawnSync('pgrep', ['-f', this.stateDir]).stdout.toString().trim();
  }

  pidOf(file: string): number {
    return Number(readFileSync(join(this.stateDir, file), 'utf8').trim());
  }
}

export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
