/**
 * CopperClient: gcd's `/v1/cli` call from TypeScript, over gcd's Unix socket (the host admin
 * socket, `$GC_STATE_DIR/gcd.sock`) or host:port (inside a VM: 10.0.2.100:80). It sends
 * exactly what the `gc` tool and copper.py send, so all three behave the same.
 *
 *   const c = new CopperClient({ socketPath: '/var/lib/copper/gcd.sock' }, { headnode: 'alice-hn' });
 *   const made = await c.clone(3, { ttlSec: 3600 });
 *   await c.kill({ generation: 2 });
 *
 * A tool's non-zero exit becomes a typed error (UsageError, QuotaError, PermissionError,
 * UnavailableError, else CopperError) whose message is its one stderr line.
 */
import { request } from 'node:http';
import { CopperError, PermissionError, QuotaError, UnavailableError, UsageError } from '../errors.js';
import type { CloneInfo, CloneUsageRow, KillSelector, WhoAmI } from '../clusters/types.js';

export type CopperTarget = { socketPath: string } | { host: string; port: number };

export interface CopperClientOptions {
  /** On the host: the headnode whose cluster to act on (sent as --headnode). */
  headnode?: string;
  /** Local account that runs the call (file ownership for tools that deliver files). */
  account?: string;
  cwd?: string;
  /** Per request; none by default (a batch of clones may take a while under TCG). */
  timeoutMs?: number;
}

/** What a tool answers (docs/PROTOCOL.md). */
export interface CliResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

interface Answer {
  stdout?: string;
  stderr?: string;
  exitCode?: number;
  needFile?: string;
  error?: string;
  code?: string;
}

const BY_CODE: Record<string, new (m: string) => CopperError> = {
  EUSAGE: UsageError,
  EQUOTA: QuotaError,
  EPERM: PermissionError,
  EUNAVAILABLE: UnavailableError,
};
const BY_EXIT: Record<number, new (m: string) => CopperError> = { 2: UsageError, 38: QuotaError, 159: PermissionError, 3: UnavailableError };

export class CopperClient {
  constructor(
    readonly target: CopperTarget,
    private readonly opts: CopperClientOptions = {},
  ) {}

  /** Run any tool (`gc`, `gcqstat`, ...) with argv; the answer as it came. */
  async cli(tool: string, argv: string[]): Promise<CliResult> {
    const body = JSON.stringify({ tool, argv, cwd: this.opts.cwd ?? '/', env: {}, account: this.opts.account ?? 'root' });
    const { status, text } = await this.post(body);
    let a: Answer;
    try {
      a = JSON.parse(text) as Answer;
    } catch {
      throw new CopperError(`gcd answered HTTP ${status} with something that is not JSON`);
    }
    if (a.error !== undefined) {
      const E = (a.code && BY_CODE[a.code]) || CopperError;
      throw new E(a.error);
    }
    if (a.needFile !== undefined) throw new UsageError(`gcd asked for the file ${a.needFile}: use the command-line tool for calls that send files`);
    return { stdout: a.stdout ?? '', stderr: a.stderr ?? '', exitCode: a.exitCode ?? 1 };
  }

  /** Fork the headnode (or, inside a VM, this VM) into n clones. */
  async clone(n: number, o: { ttlSec?: number } = {}): Promise<CloneInfo[]> {
    const argv = ['clone', String(n), '--json'];
    if (o.ttlSec !== undefined) argv.push('--ttl', String(o.ttlSec));
    return this.json<CloneInfo[]>(argv);
  }

  async clones(): Promise<CloneInfo[]> {
    return this.json<CloneInfo[]>(['clones', '--json']);
  }

  /** Live clones per user and the limits (the admin sees everybody). */
  async usage(): Promise<CloneUsageRow[]> {
    return this.json<CloneUsageRow[]>(['clones', '--usage', '--json']);
  }

  /** The clones killed. */
  async kill(sel: KillSelector): Promise<CloneInfo[]> {
    const argv = ['kill', '--json'];
    if ('all' in sel) argv.push('--all');
    else if ('generation' in sel) argv.push('--generation', String(sel.generation));
    else argv.push(...sel.ids.map(String));
    return this.json<CloneInfo[]>(argv);
  }

  async whoami(): Promise<WhoAmI> {
    return this.json<WhoAmI>(['whoami', '--json']);
  }

  private async json<T>(argv: string[]): Promise<T> {
    if (this.opts.headnode !== undefined) argv.push('--headnode', this.opts.headnode);
    const r = await this.cli('gc', argv);
    if (r.exitCode !== 0) {
      const line = r.stderr.trim().split('\n').pop()?.replace(/^gc: /, '') || `gc ${argv[0]} failed with status ${r.exitCode}`;
      const E = BY_EXIT[r.exitCode] ?? CopperError;
      throw new E(line);
    }
    return JSON.parse(r.stdout) as T;
  }

  private post(body: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const where = 'socketPath' in this.target ? { socketPath: this.target.socketPath } : { host: this.target.host, port: this.target.port };
      const req = request(
        { ...where, path: '/v1/cli', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      if (this.opts.timeoutMs !== undefined) {
        req.setTimeout(this.opts.timeoutMs, () => req.destroy(new UnavailableError(`gcd did not answer within ${this.opts.timeoutMs} ms`)));
      }
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err instanceof CopperError) reject(err);
        else reject(new UnavailableError(`cannot reach gcd: ${err.code ?? err.message}`, { cause: err }));
      });
      req.end(body);
    });
  }
}
