/** Bodies that are files (job output, stage-out archives) between nodes and the server. */
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { PayloadTooLargeError } from '../api/http-util.js';
import { UsageError } from '../errors.js';

/**
 * Write a request body to a new file (0600), at most maxBytes: a larger declared length is
 * refused before anything is read, a longer body when it passes the bound. The file is
 * removed on any failure.
 */
export async function receiveToFile(req: IncomingMessage, file: string, maxBytes: number): Promise<number> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes) {
    req.resume();
    throw new PayloadTooLargeError(`body of ${declared} bytes is over ${maxBytes}`);
  }
  const out = createWriteStream(file, { flags: 'wx', mode: 0o600 });
  let total = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      out.once('error', reject);
      out.once('open', () => resolve());
    });
    for await (const c of req) {
      const b = c as Buffer;
      total += b.length;
      if (total > maxBytes) throw new PayloadTooLargeError(`body over ${maxBytes} bytes`);
      if (!out.write(b)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
    }
    if (declared !== undefined && total !== Number(declared)) throw new UsageError(`body cut short (${total} of ${declared} bytes)`);
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
    return total;
  } catch (e) {
    out.destroy();
    await rm(file, { force: true });
    throw e;
  }
}
