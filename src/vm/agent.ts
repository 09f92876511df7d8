/**
 * A client for qemu-guest-agent (qga) over the host end of its virtio-serial port.
 *
 * qga answers one request at a time with no request id, so requests are serialized here and
 * a reply is matched to the one request in flight. A reply can still be stale: a restored
 * clone may carry half-written output from before its snapshot, and a timed-out request
 * answers late. So the channel is resynchronised with `guest-sync-delimited` (a raw 0xFF byte,
 * then a random id; qga answers 0xFF + the id) before the first request and after any timeout.
 * The socket is handled as bytes throughout: 0xFF is not UTF-8.
 */
import type { Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { DriverError, errorMessage } from '../errors.js';
import { JsonLineReader, SYNC_BYTE, isRecord, textOf } from './json-lines.js';
import { connectWithRetry, type ConnectOptions } from './unix-socket.js';

/** The guest agent answered a command with an error object. */
export class AgentError extends DriverError {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    readonly desc: string,
  ) {
    super(`guest agent ${command}: ${qmpClass}: ${desc}`);
  }
}

export interface ExecStatus {
  exited: boolean;
  exitCode: number | null;
  signal: number | null;
  /** Captured output (only with captureOutput, only once exited). */
  out: Buffer | null;
  err: Buffer | null;
  outTruncated: boolean;
  errTruncated: boolean;
}

export interface FileChunk {
  data: Buffer;
  eof: boolean;
}

interface Waiter {
  command: string;
  accept: (msg: Record<string, unknown>) => boolean;
  resolve: (msg: Record<string, unknown>) => void;
  reject: (e: Error) => void;
}

export interface AgentOptions {
  /** Default timeout per request. */
  requestTimeoutMs?: number;
  /** Longest line the agent may send (json-lines DEFAULT_MAX_LINE_BYTES). */
  maxLineBytes?: number;
  /**
   * Lines that are not JSON or answer nothing asked, allowed between two accepted answers
   * (a restored clone's junk, a timed-out request's late answer); more breaks the channel.
   */
  maxStrayLines?: number;
}

/**
 * The guest broke the agent protocol (a line over the cap, a flood of garbage or of answers
 * to nothing asked): the channel is closed for good and every request fails with this. The
 * VM's owner (clone or job) treats it as broken.
 */
export class AgentProtocolError extends DriverError {}

export class AgentClient {
  private readonly reader: JsonLineReader;
  private readonly maxStrayLines: number;
  /** Stray lines since the last accepted answer. */
  private strays = 0;
  private waiter: Waiter | undefined;
  /** Tail of the request queue: every request starts after the previous one settled. */
  private queue: Promise<unknown> = Promise.resolve();
  private needsSync = true;
  private closedErr: Error | undefined;
  private readonly closedPromise: Promise<void>;
  private readonly requestTimeoutMs: number;

  private constructor(
    private readonly sock: Socket,
    readonly path: string,
    opts: AgentOptions,
  ) {
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.reader = new JsonLineReader(opts.maxLineBytes !== undefined ? { maxLineBytes: opts.maxLineBytes } : {});
    this.maxStrayLines = opts.maxStrayLines ?? 256;
    this.closedPromise = new Promise((resolve) => {
      sock.on('close', () => {
        this.closedErr ??= new DriverError(`guest agent connection ${path} closed`);
        this.waiter?.reject(this.closedErr);
        this.waiter = undefined;
        resolve();
      });
    });
    sock.on('error', (err) => {
      this.closedErr = new DriverError(`guest agent connection ${path}: ${err.message}`, { cause: err });
    });
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  /** Open the host end of the agent channel (retrying until QEMU has created it). Does not sync. */
  static async connect(path: string, opts: ConnectOptions & AgentOptions): Promise<AgentClient> {
    const sock = await connectWithRetry(path, 'guest agent socket', opts);
    return new AgentClient(sock, path, opts);
  }

  get isClosed(): boolean {
    return this.sock.destroyed;
  }

  get closed(): Promise<void> {
    return this.closedPromise;
  }

  /** Why the guest's channel was closed for breaking the protocol, if it was. */
  get protocolError(): AgentProtocolError | undefined {
    return this.closedErr instanceof AgentProtocolError ? this.closedErr : undefined;
  }

  /** Force a resync before the next request (e.g. after the VM was restored from a snapshot). */
  markStale(): void {
    this.needsSync = true;
  }

  /**
   * Wait until the agent answers a sync, retrying with short timeouts until the deadline: the
   * guest may still be booting (its agent not yet reading) or may have just been restored.
   */
  async waitReady(deadline: number): Promise<void> {
    let attemptMs = 500;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new DriverError(`guest agent on ${this.path} did not answer in time`);
      try {
        await this.enqueue(() => this.syncNow(Math.min(attemptMs, left)));
        return;
      } catch (err) {
        if (this.closedErr) throw this.closedErr;
        if (!(err instanceof AgentTimeout)) throw err;
        attemptMs = Math.min(attemptMs * 2, 4000);
      }
    }
  }

  /** Resynchronise now (one attempt). */
  sync(timeoutMs = 5000): Promise<void> {
    return this.enqueue(() => this.syncNow(timeoutMs));
  }

  /** Send one command and return its `return` value. */
  request<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T> {
    return this.enqueue(async () => {
      if (this.needsSync) await this.syncNow(Math.min(timeoutMs ?? this.requestTimeoutMs, 5000));
      const msg: Record<string, unknown> = { execute: command };
      if (args) msg.arguments = args;
      const reply = await this.roundTrip(command, Buffer.from(JSON.stringify(msg) + '\n'), timeoutMs ?? this.requestTimeoutMs);
      if (isRecord(reply.error)) {
        throw new AgentError(command, textOf(reply.error.class, 'GenericError'), textOf(reply.error.desc, ''));
      }
      return reply.return as T;
    });
  }

  /** guest-exec: start a process in the guest; returns its pid. */
  async exec(path: string, args: string[], env: Record<string, string> | null, inputData: Buffer | null, captureOutput: boolean): Promise<number> {
    const a: Record<string, unknown> = { path, arg: args, 'capture-output': captureOutput };
    if (env) a.env = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    if (inputData) a['input-data'] = inputData.toString('base64');
    const r = await this.request<{ pid: number }>('guest-exec', a);
    return r.pid;
  }

  async execStatus(pid: number): Promise<ExecStatus> {
    const r = await this.request<Record<string, unknown>>('guest-exec-status', { pid });
    const b64 = (v: unknown): Buffer | null => (typeof v === 'string' ? Buffer.from(v, 'base64') : null);
    return {
      exited: r.exited === true,
      exitCode: typeof r.exitcode === 'number' ? r.exitcode : null,
      signal: typeof r.signal === 'number' ? r.signal : null,
      out: b64(r['out-data']),
      err: b64(r['err-data']),
      outTruncated: r['out-truncated'] === true,
      errTruncated: r['err-truncated'] === true,
    };
  }

  /**
   * Run a command to completion and return its status, polling with a growing interval
   * (timers only: never blocks the event loop).
   */
  async run(path: string, args: string[], opts: { input?: Buffer; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<ExecStatus> {
    const pid = await this.exec(path, args, opts.env ?? null, opts.input ?? null, true);
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    // Gentle growth: doubling would overshoot a 250 ms command by as much again.
    let wait = 5;
    for (;;) {
      const st = await this.execStatus(pid);
      if (st.exited) return st;
      if (Date.now() > deadline) throw new DriverError(`guest command ${path} ${args.join(' ')} did not finish in time`);
      await sleep(wait);
      wait = Math.min(wait * 1.5, 100);
    }
  }

  async fileOpen(path: string, mode: string): Promise<number> {
    return this.request<number>('guest-file-open', { path, mode });
  }

  /** One read of at most `count` bytes; an answer of another shape, or with more bytes, is refused. */
  async fileRead(handle: number, count: number): Promise<FileChunk> {
    const r = await this.request<unknown>('guest-file-read', { handle, count });
    if (!isRecord(r) || typeof r['buf-b64'] !== 'string' || typeof r.eof !== 'boolean') {
      throw new DriverError('guest agent guest-file-read: malformed answer');
    }
    const data = Buffer.from(r['buf-b64'], 'base64');
    if (data.length > count) throw new DriverError(`guest agent guest-file-read: ${data.length} bytes when ${count} were asked`);
    return { data, eof: r.eof };
  }

  /** One write; returns the bytes the guest says it took (0 to data.length). */
  async fileWrite(handle: number, data: Buffer): Promise<number> {
    const r = await this.request<unknown>('guest-file-write', { handle, 'buf-b64': data.toString('base64') });
    const n = isRecord(r) ? r.count : undefined;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > data.length) {
      throw new DriverError(`guest agent guest-file-write: bad count ${JSON.stringify(n) ?? 'undefined'} for ${data.length} bytes`);
    }
    return n;
  }

  async fileClose(handle: number): Promise<void> {
    await this.request('guest-file-close', { handle });
  }

  async close(): Promise<void> {
    if (!this.sock.destroyed) this.sock.end();
    const t = setTimeout(() => this.sock.destroy(), 1000);
    await this.closedPromise;
    clearTimeout(t);
  }

  destroy(): void {
    this.sock.destroy();
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async syncNow(timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 31 - 1);
    const req = Buffer.concat([Buffer.from([SYNC_BYTE]), Buffer.from(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }) + '\n')]);
    this.needsSync = true;
    this.reader.expectSyncByte();
    // Replies to earlier syncs (queued while the guest was not reading) are skipped by the predicate.
    await this.roundTrip('guest-sync-delimited', req, timeoutMs, (m) => m.return === id);
    this.needsSync = false;
  }

  private roundTrip(
    command: string,
    bytes: Buffer,
    timeoutMs: number,
    accept: (m: Record<string, unknown>) => boolean = () => true,
  ): Promise<Record<string, unknown>> {
    if (this.closedErr || this.sock.destroyed) {
      return Promise.reject(this.closedErr ?? new DriverError(`guest agent connection ${this.path} closed`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        // The late reply would be taken for the next request's: resync first next time.
        this.needsSync = true;
        reject(new AgentTimeout(`guest agent ${command} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        command,
        accept,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.sock.write(bytes);
    });
  }

  private onData(chunk: Buffer): void {
    if (this.sock.destroyed) return;
    let msgs: unknown[];
    try {
      msgs = this.reader.push(chunk);
    } catch (err) {
      this.breakChannel(errorMessage(err));
      return;
    }
    for (const msg of msgs) {
      // Garbage and replies nobody waits for (late answers) are dropped, up to a point.
      if (!isRecord(msg) || !this.waiter || !this.waiter.accept(msg)) {
        // While a sync is awaited, junk before the guest's answer is expected: not counted.
        if (this.waiter?.command === 'guest-sync-delimited') continue;
        if (++this.strays > this.maxStrayLines) {
          this.breakChannel(`more than ${this.maxStrayLines} lines that are not JSON or answer nothing asked`);
          return;
        }
        continue;
      }
      this.strays = 0;
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(msg);
    }
  }

  /** The guest broke the protocol: close for good; the pending request and all later ones fail. */
  private breakChannel(why: string): void {
    this.closedErr = new AgentProtocolError(`guest agent on ${this.path} broke the protocol: ${why}`);
    this.waiter?.reject(this.closedErr);
    this.waiter = undefined;
    this.sock.destroy();
  }
}

/** A request got no answer in time (the agent may be busy, not yet started, or the guest paused). */
export class AgentTimeout extends DriverError {}
