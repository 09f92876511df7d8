import type { Actor } from '../scheduler/actor.js';

/** POST /v1/cli: a thin client's tool call as gcd runs it (docs/PROTOCOL.md). */
export interface CliCall {
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
  /** The account's group names, when the client sent them (checks -W group_list). */
  groups?: string[];
}

export interface CliAnswer {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** Ask the client to send this file (relative to its cwd) and call again. */
  needFile?: string;
}

/** Runs a tool by name (the server's commands); the API knows nothing of them but this. */
export type CliRunner = (tool: string, call: CliCall) => Promise<CliAnswer>;
