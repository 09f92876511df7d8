/**
 * Moving files between host and guest through the guest agent, in chunks, bounded memory.
 *
 * The guest is hostile (docs/security.md): a file can be a symlink to /dev/zero, the agent can
 * answer `count: 0` for ever or trickle one byte per answer. So every copy has a byte cap, a
 * progress check (answers that move nothing end it) and a deadline; what was cut short is
 * reported (CopyResult.truncated, GuestFileTooLargeError), never read for ever.
 */
import { open } from 'node:fs/promises';
import { DriverError } from '../errors.js';
import { AgentError, type AgentClient } from './agent.js';

/** Bytes per guest-file-read/write; base64 makes each message a third larger. */
export const DEFAULT_CHUNK = 4 * 1024 * 1024;

/** Answers in a row that move no byte (count 0, eof false) before a copy gives up. */
export const MAX_IDLE_ANSWERS = 3;

/** Default deadline of one copy: a guest that trickles bytes must not hold a job for ever. */
export const DEFAULT_COPY_MS = 15 * 60_000;

/** A guest file was bigger than the reader allows. */
export class GuestFileTooLargeError extends DriverError {
  constructor(
    readonly guestPath: string,
    readonly maxBytes: number,
  ) {
    super(`guest file ${guestPath} is over ${maxBytes} bytes`);
  }
}

/** The guest agent answered without moving bytes, or too slowly. */
export class GuestNoProgressError extends DriverError {}

export interface CopyResult {
  bytes: number;
  /**
   * Why the copy stopped before the guest's end of file: the file was over maxBytes (the host
   * file holds the first maxBytes), or the agent stopped moving bytes or missed the deadline
   * (the host file holds what came). Undefined: the whole file was copied.
   */
  cut?: string;
}

export interface CopyOptions {
  chunk?: number;
  /** A guest file that cannot be opened gives an empty host file. */
  missingOk?: boolean;
  /** Stop after this many bytes (the rest is not read); default: no cap. */
  maxBytes?: number;
  /** Absolute time (Date.now() scale) after which the copy fails; default 15 min from now. */
  deadline?: number;
}

/** Counts answers that move nothing and watches the deadline; throws when either is spent. */
class Progress {
  private idle = 0;
  constructor(
    private readonly what: string,
    private readonly deadline: number,
  ) {}

  step(moved: number): void {
    this.idle = moved > 0 ? 0 : this.idle + 1;
    if (this.idle >= MAX_IDLE_ANSWERS) throw new GuestNoProgressError(`${this.what}: the guest agent moved no bytes in ${MAX_IDLE_ANSWERS} answers in a row`);
    if (Date.now() > this.deadline) throw new GuestNoProgressError(`${this.what}: not done by its deadline (the guest is too slow)`);
  }
}

/**
 * Copy a guest file to a host file (created or truncated), at most maxBytes of it.
 * With missingOk, a guest file that cannot be opened gives an empty host file.
 */
export async function copyFromGuest(agent: AgentClient, guestPath: string, hostPath: string, opts: CopyOptions = {}): Promise<CopyResult> {
  const chunk = opts.chunk ?? DEFAULT_CHUNK;
  const max = opts.maxBytes ?? Number.POSITIVE_INFINITY;
  let handle: number;
  try {
    handle = await agent.fileOpen(guestPath, 'rb');
  } catch (err) {
    if (!(opts.missingOk === true && err instanceof AgentError)) throw err;
    await (await open(hostPath, 'w')).close();
    return { bytes: 0 };
  }
  const out = await open(hostPath, 'w');
  const progress = new Progress(`reading ${guestPath}`, opts.deadline ?? Date.now() + DEFAULT_COPY_MS);
  let total = 0;
  let cut: string | undefined;
  try {
    for (;;) {
      // One byte past the cap tells a file of exactly maxBytes from a bigger one.
      const want = Math.min(chunk, max - total + 1);
      const { data, eof } = await agent.fileRead(handle, want);
      const keep = data.subarray(0, Math.max(0, Math.min(data.length, max - total)));
      if (keep.length) {
        await out.write(keep);
        total += keep.length;
      }
      if (keep.length < data.length) {
        cut = `${guestPath} is over ${max} bytes; the first ${max} were kept`;
        break;
      }
      if (eof) break;
      try {
        progress.step(data.length);
      } catch (err) {
        if (!(err instanceof GuestNoProgressError)) throw err;
        cut = `${err.message}; the first ${total} bytes were kept`;
        break;
      }
    }
  } finally {
    await out.close();
    await agent.fileClose(handle).catch(() => undefined);
  }
  return cut === undefined ? { bytes: total } : { bytes: total, cut };
}

/** Copy a host file into the guest (created or truncated). Returns the bytes copied. */
export async function copyToGuest(agent: AgentClient, hostPath: string, guestPath: string, chunk = DEFAULT_CHUNK, deadline?: number): Promise<number> {
  const src = await open(hostPath, 'r');
  let handle: number | undefined;
  let total = 0;
  const progress = new Progress(`writing ${guestPath}`, deadline ?? Date.now() + DEFAULT_COPY_MS);
  try {
    handle = await agent.fileOpen(guestPath, 'wb');
    const buf = Buffer.alloc(chunk);
    for (;;) {
      const { bytesRead } = await src.read(buf, 0, chunk, null);
      if (bytesRead === 0) break;
      let off = 0;
      while (off < bytesRead) {
        const n = await agent.fileWrite(handle, buf.subarray(off, bytesRead));
        off += n;
        progress.step(n);
      }
      total += bytesRead;
    }
  } finally {
    await src.close();
    if (handle !== undefined) await agent.fileClose(handle).catch(() => undefined);
  }
  return total;
}

/** Write a small buffer to a guest file. */
export async function writeGuestFile(agent: AgentClient, guestPath: string, data: Buffer): Promise<void> {
  const handle = await agent.fileOpen(guestPath, 'wb');
  const progress = new Progress(`writing ${guestPath}`, Date.now() + DEFAULT_COPY_MS);
  try {
    let off = 0;
    while (off < data.length) {
      const n = await agent.fileWrite(handle, data.subarray(off, off + DEFAULT_CHUNK));
      off += n;
      progress.step(n);
    }
  } finally {
    await agent.fileClose(handle).catch(() => undefined);
  }
}

/**
 * Read a small guest file whole; undefined when it does not exist. A file over maxBytes
 * (default 64 KiB) throws GuestFileTooLargeError: a small file that is not small is the guest's doing.
 */
export async function readGuestFile(agent: AgentClient, guestPath: string, opts: { maxBytes?: number; deadline?: number } = {}): Promise<Buffer | undefined> {
  const max = opts.maxBytes ?? 65536;
  let handle: number;
  try {
    handle = await agent.fileOpen(guestPath, 'rb');
  } catch (err) {
    if (err instanceof AgentError) return undefined; // no such file; a dead channel still throws
    throw err;
  }
  const parts: Buffer[] = [];
  let total = 0;
  const progress = new Progress(`reading ${guestPath}`, opts.deadline ?? Date.now() + 60_000);
  try {
    for (;;) {
      const { data, eof } = await agent.fileRead(handle, Math.min(65536, max - total + 1));
      total += data.length;
      if (total > max) throw new GuestFileTooLargeError(guestPath, max);
      parts.push(data);
      if (eof) break;
      progress.step(data.length);
    }
  } finally {
    await agent.fileClose(handle).catch(() => undefined);
  }
  return Buffer.concat(parts);
}
