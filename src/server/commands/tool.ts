import type { CliAnswer, CliCall } from '../../api/cli-call.js';
import type { HeadnodeManager } from '../../headnodes/types.js';
import type { Scheduler } from '../../scheduler/scheduler.js';
import type { AccountingReader } from '../../accounting/accounting-log.js';

/** What a command gets when gcd runs it for a thin client, and what it answers (api/cli-call.ts). */
export type ToolRequest = CliCall;
export type ToolResult = CliAnswer;

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
