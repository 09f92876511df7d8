import type { HeadnodeManager } from '../headnodes/types.js';
import type { Actor } from '../scheduler/actor.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { AccountingReader } from '../accounting/accounting-log.js';

/** What a command-line tool gets when gcd runs it on a client's behalf. */
export interface ToolRequest {
  actor: Actor;
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  /** Local account that ran the tool (owns delivered files inside a headnode). */
  account: string;
  /** Files the client sent after a needFile answer, by the path it was asked for. */
  files: Record<string, string>;
  /** Paths the client was asked for and found not to exist. */
  missing: string[];
}

export interface ToolResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** Ask the client to send this file (relative to its cwd) and call again. */
  needFile?: string;
}

/** The services tools act through. */
export interface ToolServices {
  scheduler: Scheduler;
  headnodes: Pick<HeadnodeManager, 'get'> & Partial<HeadnodeManager>;
  serverName: string;
  /** Extra `gc` subcommands (clones, images) registered by the daemon. */
  gc?: Tool;
  /** PBS accounting files, for gctracejob and gcseff once a job's history has expired. */
  accounting?: AccountingReader;
}

export type Tool = (req: ToolRequest, s: ToolServices) => Promise<ToolResult>;

export const ok = (stdout: string, stderr = ''): ToolResult => ({ stdout, stderr, exitCode: 0 });
