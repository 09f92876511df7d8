/**
 * Byte-level framing for QMP and the guest agent: both send one JSON object per line.
 * Works on Buffers, never on decoded text, because the guest agent's sync protocol puts a
 * raw 0xFF byte (invalid UTF-8) in the stream, and a chunk may end inside a multi-byte
 * character.
 *
 * The guest agent's side of the stream is written by a hostile guest (docs/security.md): the
 * bytes of an unfinished line are kept as a list of chunks (joined once, when the newline
 * comes: no quadratic concatenation) and a line longer than maxLineBytes is refused with a
 * ProtocolError before it is joined or decoded, so a flood costs bounded memory.
 */
import { DriverError } from '../errors.js';

export const SYNC_BYTE = 0xff;

/**
 * The longest line accepted by default: the biggest legitimate agent answer is a
 * guest-exec-status with 16 MiB of captured output per stream, base64 (2 x ~22 MiB).
 */
export const DEFAULT_MAX_LINE_BYTES = 48 * 1024 * 1024;

/** The peer broke the line protocol (a line over the cap); its channel cannot be trusted again. */
export class ProtocolError extends DriverError {
  constructor(
    message: string,
    readonly limit: number,
  ) {
    super(message);
  }
}

export class JsonLineReader {
  /** Bytes of the unfinished line, as received (never joined until its newline arrives). */
  private parts: Buffer[] = [];
  private partBytes = 0;
  /** While true, every byte up to and including the next 0xFF is dropped. */
  private skippingToSync = false;
  readonly maxLineBytes: number;

  constructor(opts: { maxLineBytes?: number } = {}) {
    this.maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  }

  /** Drop everything received so far and everything until the next 0xFF byte. */
  expectSyncByte(): void {
    this.clear();
    this.skippingToSync = true;
  }

  /** Forget buffered bytes (after a timeout the rest of a line may never come). */
  reset(): void {
    this.clear();
    this.skippingToSync = false;
  }

  /**
   * Feed bytes; returns the complete lines parsed as JSON. Lines that are not JSON (garbage
   * left in a guest channel by a restored VM) are returned as `undefined` so callers can count them.
   * Throws ProtocolError when a line grows past maxLineBytes (the reader is then empty).
   */
  push(chunk: Buffer): unknown[] {
    let data = chunk;
    if (this.skippingToSync) {
      const ff = data.indexOf(SYNC_BYTE);
      if (ff < 0) return [];
      data = data.subarray(ff + 1);
      this.skippingToSync = false;
    }
    const out: unknown[] = [];
    let start = 0;
    for (;;) {
      // Only the new bytes are searched: the buffered part is known to hold no newline.
      const nl = data.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = data.subarray(start, nl);
      start = nl + 1;
      if (this.partBytes + piece.length > this.maxLineBytes) this.overflow(this.partBytes + piece.length);
      const whole = this.parts.length ? Buffer.concat([...this.parts, piece]) : piece;
      this.clear();
      const msg = parseLine(whole);
      if (msg !== SKIP) out.push(msg);
    }
    if (start < data.length) {
      const tail = data.subarray(start);
      if (this.partBytes + tail.length > this.maxLineBytes) this.overflow(this.partBytes + tail.length);
      // Copy: the tail must not pin the (possibly big) chunk it came from.
      this.parts.push(Buffer.from(tail));
      this.partBytes += tail.length;
    }
    return out;
  }

  get pendingBytes(): number {
    return this.partBytes;
  }

  private clear(): void {
    this.parts = [];
    this.partBytes = 0;
  }

  private overflow(bytes: number): never {
    this.clear();
    throw new ProtocolError(`a line of over ${this.maxLineBytes} bytes (${bytes} so far) without a newline`, this.maxLineBytes);
  }
}

/** An empty line: nothing to return. */
const SKIP = Symbol('skip');

function parseLine(raw: Buffer): unknown {
  // A stray 0xFF inside a line (the agent echoes one before a delimited sync reply) is dropped.
  const line = stripSyncBytes(raw).toString('utf8').trim();
  if (!line) return SKIP;
  try {
    return JSON.parse(line) as unknown;
  } catch {
    return undefined;
  }
}

function stripSyncBytes(b: Buffer): Buffer {
  if (b.indexOf(SYNC_BYTE) < 0) return b;
  const pieces: Buffer[] = [];
  let from = 0;
  for (let ff = b.indexOf(SYNC_BYTE); ff >= 0; ff = b.indexOf(SYNC_BYTE, from)) {
    if (ff > from) pieces.push(b.subarray(from, ff));
    from = ff + 1;
  }
  if (from < b.length) pieces.push(b.subarray(from));
  return Buffer.concat(pieces);
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A field of a peer's error as text: strings as they are, anything else as JSON (never "[object Object]"). */
export function textOf(v: unknown, fallback: string): string {
  if (typeof v === 'string') return v;
  if (v === undefined || v === null) return fallback;
  return JSON.stringify(v) ?? fallback;
}
