/**
 * Byte-level framing for QMP and the guest agent: both send one JSON object per line.
 * Works on Buffers, never on decoded text, because the guest agent's sync protocol puts a
 * raw 0xFF byte (invalid UTF-8) in the stream, and a chunk may end inside a multi-byte
 * character.
 */
export const SYNC_BYTE = 0xff;

export class JsonLineReader {
  private buf: Buffer = Buffer.alloc(0);
  /** While true, every byte up to and including the next 0xFF is dropped. */
  private skippingToSync = false;

  /** Drop everything received so far and everything until the next 0xFF byte. */
  expectSyncByte(): void {
    this.buf = Buffer.alloc(0);
    this.skippingToSync = true;
  }

  /** Forget buffered bytes (after a timeout the rest of a line may never come). */
  reset(): void {
    this.buf = Buffer.alloc(0);
    this.skippingToSync = false;
  }

  /**
   * Feed bytes; returns the complete lines parsed as JSON. Lines that are not JSON (garbage
   * left in a guest channel by a restored VM) are returned as `undefined` so callers can count them.
   */
  push(chunk: Buffer): unknown[] {
    let data = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (this.skippingToSync) {
      const ff = data.indexOf(SYNC_BYTE);
      if (ff < 0) {
        this.buf = Buffer.alloc(0);
        return [];
      }
      data = data.subarray(ff + 1);
      this.skippingToSync = false;
    }
    const out: unknown[] = [];
    let start = 0;
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      if (nl < 0) break;
      // A stray 0xFF inside a line (the agent echoes one before a delimited sync reply) is dropped.
      const line = stripSyncBytes(data.subarray(start, nl)).toString('utf8').trim();
      start = nl + 1;
      if (!line) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        out.push(undefined);
      }
    }
    // Copy the tail so the big chunk it came from can be freed.
    this.buf = start < data.length ? Buffer.from(data.subarray(start)) : Buffer.alloc(0);
    return out;
  }

  get pendingBytes(): number {
    return this.buf.length;
  }
}

function stripSyncBytes(b: Buffer): Buffer {
  if (b.indexOf(SYNC_BYTE) < 0) return b;
  const bytes: number[] = [];
  for (const x of b) if (x !== SYNC_BYTE) bytes.push(x);
  return Buffer.from(bytes);
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
