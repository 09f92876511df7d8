import { errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import type { AgentClient } from '../agent.js';

/**
 * The VM's own clock now, in ms since the epoch (fractional), from guest-get-time: the agent
 * answers it itself (no program started). Read just before a snapshot's pause it is a bound
 * the freeze instant can never be earlier than, in the clock the guest stamps its files with,
 * whatever the host's clock says. Undefined when the agent does not answer in time (the
 * snapshot is not held up for it; its readers then fall back to the host's time).
 */
export async function guestClockMs(agent: AgentClient, vm: string, timeoutMs = 2000): Promise<number | undefined> {
  try {
    const ns = await agent.request<number>('guest-get-time', undefined, timeoutMs);
    return typeof ns === 'number' && Number.isFinite(ns) && ns > 0 ? Math.floor(ns / 1000) / 1000 : undefined;
  } catch (e) {
    log.warn(`snapshot of ${vm}: its guest clock was not read; the freeze time is the host's`, { error: errorMessage(e) });
    return undefined;
  }
}
