/**
 * Reading part of a guest file that is still being written (a running job's output), from
 * an offset, through the guest agent. Separate from guest-files.ts, which copies whole files.
 */
import { AgentError, type AgentClient } from './agent.js';

/** Bytes per guest-file-read while peeking: small, so a read never holds the agent for long. */
const PEEK_CHUNK = 256 * 1024;

/**
 * Up to maxBytes of a guest file from `offset`; undefined when the file cannot be opened
 * (not made yet, or gone). A dead agent channel still throws.
 */
export async function readGuestFileAt(agent: AgentClient, guestPath: string, offset: number, maxBytes: number): Promise<Buffer | undefined> {
  let handle: number;
  try {
    handle = await agent.fileOpen(guestPath, 'rb');
  } catch (err) {
    if (err instanceof AgentError) return undefined;
    throw err;
  }
  const parts: Buffer[] = [];
  let got = 0;
  try {
    if (offset > 0) await agent.request('guest-file-seek', { handle, offset, whence: 'set' });
    while (got < maxBytes) {
      const { data, eof } = await agent.fileRead(handle, Math.min(PEEK_CHUNK, maxBytes - got));
      parts.push(data);
      got += data.length;
      if (eof || data.length === 0) break;
    }
  } finally {
    await agent.fileClose(handle).catch(() => undefined);
  }
  return Buffer.concat(parts);
}
