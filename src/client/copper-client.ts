/**
 * CopperClient: gcd's API from TypeScript, over gcd's Unix socket (the host admin socket,
 * `$GC_STATE_DIR/gcd.sock`) or host:port (inside a VM: 10.0.2.100:80). The cluster calls use
 * the typed routes (/v1/clusters/..., docs/PROTOCOL.md); cli() runs any tool over /v1/cli.
 *
 *   const c = new CopperClient({ socketPath: '/var/lib/copper/gcd.sock' }, { headnode: 'alice-hn' });
 *   const made = await c.clone(3, { ttlSec: 3600 });
 *   await c.kill({ generation: 2 });
 *
 * A refusal is a typed error (UsageError, QuotaError with its fields, PermissionError,
 * UnavailableError, else CopperError) whose message is gcd's one line.
 */
import { errorFromBody } from '../api/error-map.js';
import { CopperError, UnavailableError, UsageError } from '../errors.js';
import type { CloneInfo, CloneUsageRow, KillSelector, WhoAmI } from '../clusters/types.js';
import { httpCall, type CopperTarget } from './http.js';

export type { CopperTarget };


export interface CopperClientOptions {
  /** On the host: the headnode whose cluster to act on. */
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

interface CliAnswerBody {
  stdout?: string;
  stderr?: string;
  exitCode?: number;
  needFile?: string;
}

export class CopperClient {
  constructor(
    readonly target: CopperTarget,
    private readonly opts: CopperClientOptions = {},
  ) {}

  /** Run any tool (`gc`, `gcqstat`, ...) with argv; the answer as it came. */
  async cli(tool: string, argv: string[]): Promise<CliResult> {
    const body = { tool, argv, cwd: this.opts.cwd ?? '/', env: {}, account: this.opts.account ?? 'root' };
    const a = await this.call<CliAnswerBody>('POST', '/v1/cli', body);
    if (a.needFile !== undefined) throw new UsageError(`gcd asked for the file ${a.needFile}: use the command-line tool for calls that send files`);
    return { stdout: a.stdout ?? '', stderr: a.stderr ?? '', exitCode: a.exitCode ?? 1 };
  }

  /** Fork the headnode (or, inside a VM, this VM) into n clones. */
  async clone(n: number, o: { ttlSec?: number } = {}): Promise<CloneInfo[]> {
    const body = { n, ...(o.ttlSec !== undefined ? { ttlSec: o.ttlSec } : {}), ...this.headnode() };
    return (await this.call<{ clones: CloneInfo[] }>('POST', '/v1/clusters/clone', body)).clones;
  }

  async clones(): Promise<CloneInfo[]> {
    return (await this.call<{ clones: CloneInfo[] }>('GET', `/v1/clusters${this.query()}`)).clones;
  }

  /** Live clones per user and the limits (the admin sees everybody). */
  async usage(): Promise<CloneUsageRow[]> {
    return (await this.call<{ usage: CloneUsageRow[] }>('GET', '/v1/clusters/usage')).usage;
  }

  /** The clones killed. */
  async kill(sel: KillSelector): Promise<CloneInfo[]> {
    return (await this.call<{ killed: CloneInfo[] }>('POST', '/v1/clusters/kill', { ...sel, ...this.headnode() })).killed;
  }

  async whoami(): Promise<WhoAmI> {
    return this.call<WhoAmI>('GET', `/v1/clusters/whoami${this.query()}`);
  }

  private headnode(): { headnode?: string } {
    return this.opts.headnode !== undefined ? { headnode: this.opts.headnode } : {};
  }

  private query(): string {
    return this.opts.headnode !== undefined ? `?headnode=${encodeURIComponent(this.opts.headnode)}` : '';
  }

  /** One request; a non-200 answer becomes the typed error gcd named. */
  private async call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const { status, text } = await this.send(method, path, body === undefined ? '' : JSON.stringify(body));
    let a: unknown;
    try {
      a = JSON.parse(text);
    } catch {
      throw new CopperError(`gcd answered HTTP ${status} with something that is not JSON`);
    }
    if (typeof a !== 'object' || a === null) throw new CopperError(`gcd answered HTTP ${status} with a JSON value that is not an object`);
    if (status !== 200) throw errorFromBody(a, `gcd answered HTTP ${status}`);
    return a as T;
  }

  private async send(method: string, path: string, body: string): Promise<{ status: number; text: string }> {
    try {
      return await httpCall(this.target, method, path, body, this.opts.timeoutMs);
    } catch (err) {
      if (err instanceof CopperError) throw err;
      const e = err as NodeJS.ErrnoException;
      throw new UnavailableError(`cannot reach gcd: ${e.code ?? e.message}`, { cause: err });
    }
  }
}
