/**
 * Moving files between host and guest through the guest agent, in chunks: no size limit
 * (guest-exec's captured output stops at 16 MiB, these do not), bounded memory.
 */
import { open } from 'node:fs/promises';
import { AgentError, type AgentClient } from './agent.js';

/** Bytes per guest-file-read/write; base64 makes each message a third larger. */
export const DEFAULT_CHUNK = 4 * 1024 * 1024;

/**
 * Copy a guest file to a host file (created or truncated). Returns the bytes copied.
 * With missingOk, a guest file that cannot be opened gives an empty host file.
 */
export async function copyFromGuest(
  agent: AgentClient,
  guestPath: string,
  hostPath: string,
  opts: { chunk?: number; missingOk?: boolean } = {},
): Promise<number> {
  const chunk = opts.chunk ?? DEFAULT_CHUNK;
  let handle: number;
  try {
    handle = await agent.fileOpen(guestPath, 'rb');
  } catch (err) {
    if (!(opts.missingOk === true && err instanceof AgentError)) throw err;
    await (await open(hostPath, 'w')).close();
    return 0;
  }
  const out = await open(hostPath, 'w');
  let total = 0;
  try {
    for (;;) {
      const { data, eof } = await agent.fileRead(handle, chunk);
      if (data.length) {
        await out.write(data);
        total += data.length;
      }
      if (eof || data.length === 0) break;
    }
  } finally {
    await out.close();
    await agent.fileClose(handle).catch(() => undefined);
  }
  return total;
}

/** Copy a host file into the guest (created or truncated). Returns the bytes copied. */
export async function copyToGuest(agent: AgentClient, hostPath: string, guestPath: string, chunk = DEFAULT_CHUNK): Promise<number> {
  const src = await open(hostPath, 'r');
  let handle: number | undefined;
  let total = 0;
  try {
    handle = await agent.fileOpen(guestPath, 'wb');
    const buf = Buffer.alloc(chunk);
    for (;;) {
      const { bytesRead } = await src.read(buf, 0, chunk, null);
      if (bytesRead === 0) break;
      let off = 0;
      while (off < bytesRead) off += await agent.fileWrite(handle, buf.subarray(off, bytesRead));
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
  try {
    let off = 0;
    while (off < data.length) off += await agent.fileWrite(handle, data.subarray(off, off + DEFAULT_CHUNK));
  } finally {
    await agent.fileClose(handle).catch(() => undefined);
  }
}

/** Read a small guest file whole; undefined when it does not exist. */
export async function readGuestFile(agent: AgentClient, guestPath: string): Promise<Buffer | undefined> {
  let handle: number;
  try {
    handle = await agent.fileOpen(guestPath, 'rb');
  } catch (err) {
    if (err instanceof AgentError) return undefined; // no such file; a dead channel still throws
    throw err;
  }
  const parts: Buffer[] = [];
  try {
    for (;;) {
      const { data, eof } = await agent.fileRead(handle, 65536);
      parts.push(data);
      if (eof || data.length === 0) break;
    }
  } finally {
    await agent.fileClose(handle).catch(() => undefined);
  }
  return Buffer.concat(parts);
}
