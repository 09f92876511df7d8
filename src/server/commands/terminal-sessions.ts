import { randomBytes } from 'node:crypto';
import type { TerminalSession } from '../../drivers/driver.js';
import { UsageError } from '../../errors.js';
import { log } from '../../log.js';
import type { Actor } from '../../scheduler/actor.js';

/** A client that sends no round for this long has gone: its shell is closed. */
export const TERMINAL_IDLE_MS = 30_000;

interface Entry {
  session: TerminalSession;
  who: string;
  seen: number;
}

/** Who may continue a session: the same channel (VM) or the administrator who opened it. */
function whoOf(actor: Actor): string {
  return actor.kind === 'admin' ? 'admin' : `vm:${actor.identity.vmId}`;
}

/**
 * gcqexec's open terminal sessions, by an unguessable id that the client's cursor carries.
 * One registry per gcd; sessions end with their shell, or when their client stops polling.
 */
export class TerminalSessions {
  private readonly entries = new Map<string, Entry>();
  private timer: NodeJS.Timeout | undefined;

  add(actor: Actor, session: TerminalSession): string {
    const id = randomBytes(16).toString('hex');
    this.entries.set(id, { session, who: whoOf(actor), seen: Date.now() });
    this.timer ??= setInterval(() => void this.sweep(), 5000).unref();
    return id;
  }

  get(actor: Actor, id: string): TerminalSession {
    const e = this.entries.get(id);
    if (!e || e.who !== whoOf(actor)) throw new UsageError('no such terminal session (it ended, or its client was gone too long)');
    e.seen = Date.now();
    return e.session;
  }

  async end(id: string): Promise<void> {
    const e = this.entries.get(id);
    this.entries.delete(id);
    if (this.entries.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    await e?.session.close().catch(() => undefined);
  }

  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const [id, e] of [...this.entries]) {
      if (now - e.seen > TERMINAL_IDLE_MS) {
        log.info('terminal session closed: its client stopped polling', { session: id.slice(0, 8) });
        await this.end(id);
      }
    }
  }
}

/** gcd's sessions (one process, one registry). */
export const terminalSessions = new TerminalSessions();
