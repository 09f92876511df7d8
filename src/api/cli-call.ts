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
  /** The `more.cursor` of the previous answer, when the client continues one (gcqpeek -f). */
  cursor?: string;
  /** The client's terminal, when its stdin is one (gcqexec ID opens a shell only then). */
  terminal?: { rows: number; cols: number };
  /** Keystrokes typed since the last round of a terminal session, base64. */
  input?: string;
  /** The account's group names, when the client sent them (checks -W group_list). */
  groups?: string[];
  /** The user pressed Ctrl-C during rounds the last answer marked `interruptible` (gcqsub -I waiting). */
  interrupt?: boolean;
}

export interface CliAnswer {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** Ask the client to send this file (relative to its cwd) and call again. */
  needFile?: string;
  /**
   * The answer goes on: the client prints this round, waits waitMs and sends the same request
   * again with `cursor` (gcqpeek -f). Absent: this round is the last.
   */
  more?: { cursor: string; waitMs: number };
  /** The rounds are a terminal session: the client puts its terminal in raw mode and sends `input`. */
  terminal?: boolean;
  /**
   * Ctrl-C during the wait before the next round does not end the client: it sends that round
   * at once with `interrupt: true` and prints the answer (gcqsub -I deletes the job it waits for).
   */
  interruptible?: boolean;
}

/** Runs a tool by name (the server's commands); the API knows nothing of them but this. */
export type CliRunner = (tool: string, call: CliCall) => Promise<CliAnswer>;
