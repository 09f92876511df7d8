import { open } from 'node:fs/promises';

/** Up to maxBytes of a host file from `offset` (a job's output copy); undefined when it is not there. */
export async function readHostFileAt(path: string, offset: number, maxBytes: number): Promise<Buffer | undefined> {
  let f;
  try {
    f = await open(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const buf = Buffer.alloc(maxBytes);
    const { bytesRead } = await f.read(buf, 0, maxBytes, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await f.close();
  }
}
