/** A fresh clone's own identity (clone-init), and guest text fit for a log line. */
import { randomBytes } from 'node:crypto';
import { DriverError } from '../../errors.js';
import type { AgentClient } from '../agent.js';
import { GUEST_CLONE_INIT } from '../guest-programs.js';

/** clone-init's arguments (hostname, fresh machine-id, the host's clock) and its seed line. */
export function identity(hostname: string): { args: string[]; seed: Buffer } {
  const machineId = randomBytes(16).toString('hex');
  const epoch = (Date.now() / 1000).toFixed(3);
  // The seed goes in as one line on stdin, not as an argument other guest processes could read.
  return { args: [hostname, machineId, epoch], seed: Buffer.from(randomBytes(32).toString('hex') + '\n') };
}

/** Give the clone its own identity before anything runs in it. */
export async function cloneInit(agent: AgentClient, hostname: string, timeoutMs: number): Promise<void> {
  const id = identity(hostname);
  const st = await agent.run(GUEST_CLONE_INIT, id.args, { input: id.seed, timeoutMs });
  if (st.exitCode !== 0) {
    throw new DriverError(`clone-init failed (${st.signal ? `signal ${st.signal}` : `status ${st.exitCode}`}): ${guestText(st.err?.toString() ?? '')}`);
  }
}

/** Text from a guest, fit for a job comment or a log line: one line, printable, bounded. */
export function guestText(s: string, max = 400): string {
  const one = s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max)}…` : one;
}
