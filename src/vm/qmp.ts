/**
 * A QMP (QEMU Machine Protocol) client over a Unix socket: greeting + capabilities
 * negotiation, commands matched to replies by id, events to subscribers.
 */
import type { Socket } from 'node:net';
import { DriverError, errorMessage } from '../errors.js';
import { JsonLineReader, isRecord, textOf } from './json-lines.js';
import { connectWithRetry, type ConnectOptions } from './unix-socket.js';

/** QMP answered a command with an error object. */
export class QmpError extends DriverError {
  constructor(
    readonly command: string,
    /** QMP's error class, e.g. `GenericError`, `CommandNotFound`, `DeviceNotFound`. */
    readonly qmpClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${qmpClass}: ${desc}`);
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export type QmpEventHandler = (ev: QmpEvent) => void;

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions extends ConnectOptions {
  /** Default timeout for each command. */
  commandTimeoutMs?: number;
}

export class QmpClient {
  private readonly reader = new JsonLineReader();
  private readonly pending = new Map<string, Pending>();
  private readonly handlers = new Map<string, Set<QmpEventHandler>>();
  private nextId = 1;
  private closedErr: Error | undefined;
  private readonly closedPromise: Promise<void>;
  private greeting: Record<string, unknown> | undefined;
  private greetingWaiter: ((g: Record<string, unknown>) => void) | undefined;

  private constructor(
    private readonly sock: Socket,
    readonly path: string,
    private readonly commandTimeoutMs: number,
  ) {
    this.closedPromise = new Promise((resolve) => {
      sock.on('close', () => {
        this.failAll(this.closedErr ?? new DriverError(`QMP connection ${path} closed`));
        resolve();
      });
    });
    sock.on('error', (err) => {
      this.closedErr = new DriverError(`QMP connection ${path}: ${err.message}`, { cause: err });
    });
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  /**
   * Connect (retrying until QEMU has created the socket), read the greeting and negotiate
   * capabilities. Rejects with DriverError on deadline or if isAlive() reports the process gone.
   */
  static async connect(path: string, opts: QmpConnectOptions): Promise<QmpClient> {
    const sock = await connectWithRetry(path, 'QMP', opts);
    const client = new QmpClient(sock, path, opts.commandTimeoutMs ?? 30_000);
    try {
      await client.waitGreeting(Math.max(1000, opts.deadline - Date.now()));
      await client.execute('qmp_capabilities');
      return client;
    } catch (err) {
      client.destroy();
      throw err;
    }
  }

  /** The QEMU version and capabilities QEMU announced. */
  get banner(): Record<string, unknown> | undefined {
    return this.greeting;
  }

  get isClosed(): boolean {
    return this.sock.destroyed;
  }

  /** Resolves when the connection has closed (QEMU exited or close() was called). */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  private waitGreeting(timeoutMs: number): Promise<Record<string, unknown>> {
    if (this.greeting) return Promise.resolve(this.greeting);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new DriverError(`no QMP greeting on ${this.path}`)), timeoutMs);
      void this.closedPromise.then(() => {
        clearTimeout(timer);
        reject(new DriverError(`QMP connection ${this.path} closed before the greeting`));
      });
      this.greetingWaiter = (g) => {
        clearTimeout(timer);
        resolve(g);
      };
    });
  }

  /** Run a command; rejects with QmpError when QMP answers with an error. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T> {
    if (this.closedErr || this.sock.destroyed) {
      return Promise.reject(this.closedErr ?? new DriverError(`QMP connection ${this.path} closed`));
    }
    const id = `c${this.nextId++}`;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args) msg.arguments = args;
    return new Promise<T>((resolve, reject) => {
      const ms = timeoutMs ?? this.commandTimeoutMs;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new DriverError(`QMP ${command} timed out after ${ms} ms`));
      }, ms);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /** Subscribe to an event by name ('*' for all); returns the unsubscribe function. */
  on(event: string, handler: QmpEventHandler): () => void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  /** Wait for the next event of that name matching pred. */
  waitEvent(event: string, timeoutMs: number, pred: (ev: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const off = this.on(event, (ev) => {
        if (!pred(ev)) return;
        clearTimeout(timer);
        off();
        resolve(ev);
      });
      const timer = setTimeout(() => {
        off();
        reject(new DriverError(`no QMP event ${event} within ${timeoutMs} ms`));
      }, timeoutMs);
    });
  }

  /** Close the connection; pending commands reject. */
  async close(): Promise<void> {
    if (!this.sock.destroyed) this.sock.end();
    const t = setTimeout(() => this.sock.destroy(), 1000);
    await this.closedPromise;
    clearTimeout(t);
  }

  /** Drop the connection at once. */
  destroy(): void {
    this.sock.destroy();
  }

  private onData(chunk: Buffer): void {
    let msgs: unknown[];
    try {
      msgs = this.reader.push(chunk);
    } catch (err) {
      // A line over the cap: the stream cannot be trusted again; pending commands fail.
      this.closedErr ??= new DriverError(`QMP connection ${this.path}: ${errorMessage(err)}`, { cause: err });
      this.sock.destroy();
      return;
    }
    for (const msg of msgs) {
      if (!isRecord(msg)) continue; // QMP never sends non-JSON; ignore rather than crash
      if (isRecord(msg.QMP)) {
        this.greeting = msg.QMP;
        this.greetingWaiter?.(msg.QMP);
        this.greetingWaiter = undefined;
      } else if (typeof msg.event === 'string') {
        this.dispatchEvent({
          event: msg.event,
          data: isRecord(msg.data) ? msg.data : {},
          timestamp: msg.timestamp as QmpEvent['timestamp'],
        });
      } else if (typeof msg.id === 'string') {
        const p = this.pending.get(msg.id);
        if (!p) continue; // reply to a command that already timed out
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        if (isRecord(msg.error)) {
          p.reject(new QmpError(p.command, textOf(msg.error.class, 'GenericError'), textOf(msg.error.desc, '')));
        } else {
          p.resolve(msg.return);
        }
      }
    }
  }

  private dispatchEvent(ev: QmpEvent): void {
    for (const key of [ev.event, '*']) {
      for (const h of [...(this.handlers.get(key) ?? [])]) {
        try {
          h(ev);
        } catch {
          // A subscriber's bug must not break the connection.
        }
      }
    }
  }

  private failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
  }
}
