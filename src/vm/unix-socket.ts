import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { DriverError, errorMessage } from '../errors.js';

export interface ConnectOptions {
  /** Absolute time (Date.now() scale) after which connecting gives up. */
  deadline: number;
  /** Checked between attempts: stop early when the process that should listen is gone. */
  isAlive?: () => boolean;
  /** Pause between attempts. */
  retryMs?: number;
}

/** Codes that mean "the listener is not there yet": QEMU creates its sockets during startup. */
const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    const onError = (err: Error): void => {
      sock.destroy();
      reject(err);
    };
    sock.once('error', onError);
    sock.once('connect', () => {
      sock.off('error', onError);
      resolve(sock);
    });
  });
}

/** Connect to a Unix socket, retrying until it appears, the deadline passes or isAlive() fails. */
export async function connectWithRetry(path: string, what: string, opts: ConnectOptions): Promise<Socket> {
  const retryMs = opts.retryMs ?? 20;
  for (;;) {
    try {
      return await connectOnce(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (!RETRYABLE.has(code)) {
        throw new DriverError(`cannot connect to ${what} at ${path}: ${errorMessage(err)}`, { cause: err });
      }
      if (opts.isAlive && !opts.isAlive()) {
        throw new DriverError(`${what} at ${path}: the process exited before its socket accepted connections`);
      }
      if (Date.now() >= opts.deadline) {
        throw new DriverError(`timed out connecting to ${what} at ${path} (${code})`, { cause: err });
      }
      await sleep(retryMs);
    }
  }
}
