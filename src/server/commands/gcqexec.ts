import { UsageError } from '../../errors.js';
import { pbsEnvironment } from '../../scheduler/job-env.js';
import type { Tool, ToolRequest, ToolResult } from './tool.js';
import { lookJob, runningClone } from './running-job.js';
import { terminalSessions } from './terminal-sessions.js';
import { completeUtf8 } from './gcqpeek.js';

const USAGE = 'usage: gcqexec job_identifier [--] command [arg...]';

/** What gcqexec's argv asks for: the job and the command (empty: a shell). */
export interface ExecArgs {
  id: string;
  command: string[];
}

/**
 * `gcqexec ID [--] CMD ARG...`. Parsed by hand, not by yargs: everything after the id is the
 * command's own (`gcqexec 12 ls -l` must not take -l as gcqexec's).
 */
export function parseExecArgs(argv: readonly string[]): ExecArgs | 'help' {
  const a = [...argv];
  if (a[0] === '--help' || a[0] === '-h') return 'help';
  if (a[0] === '--') a.shift();
  const id = a.shift();
  if (id === undefined || id === '') throw new UsageError(`a job id is required\n${USAGE}`);
  if (id.startsWith('-')) throw new UsageError(`unknown option '${id}'\n${USAGE}`);
  if (a[0] === '--') a.shift();
  return { id, command: a };
}

/**
 * gcqexec ID -- CMD: run a command in a running job's clone, as the job's account, in its
 * working directory, with its environment; its stdout, stderr and exit status come back
 * (128+N when a signal N ended it). Owner or admin only. No stdin.
 * `gcqexec ID` alone, from a client whose stdin is a terminal: a login shell in the clone,
 * as a terminal session of polled rounds (the cursor names the session; `input` carries the
 * keystrokes); leaving the shell ends it, with the shell's exit status.
 */
export const gcqexec: Tool = async (req, s) => {
  const parsed = parseExecArgs(req.argv);
  if (parsed === 'help') return { stdout: `${USAGE}\n`, stderr: '', exitCode: 0 };
  const driver = s.clones;
  if (!driver?.enter) throw new UsageError('this gcd\'s driver cannot enter running jobs');
  if (parsed.command.length === 0 && req.cursor !== undefined) return terminalRound(req);
  const job = await lookJob(s, req.actor, parsed.id);
  const cloneId = runningClone(job);
  if (parsed.command.length === 0) {
    if (!req.terminal) throw new UsageError('an interactive shell needs a terminal (stdin is not one): give a command, gcqexec ID -- CMD [ARG...]');
    if (!driver.openTerminal) throw new UsageError('this gcd\'s driver cannot open a shell in a job: give a command, gcqexec ID -- CMD [ARG...]');
    const env = pbsEnvironment(job);
    env.TERM = req.env.TERM && /^[A-Za-z0-9._+-]{1,64}$/.test(req.env.TERM) ? req.env.TERM : 'xterm';
    const session = await driver.openTerminal(cloneId, {
      argv: [], cwd: job.spec.cwd, env, user: job.spec.account ?? 'root', rows: req.terminal.rows, cols: req.terminal.cols,
    });
    const id = terminalSessions.add(req.actor, session);
    return { stdout: '', stderr: '', exitCode: 0, terminal: true, more: { cursor: id, waitMs: 0 } };
  }
  const r = await driver.enter(cloneId, {
    argv: parsed.command,
    cwd: job.spec.cwd,
    env: pbsEnvironment(job),
    user: job.spec.account ?? 'root',
  });
  const exitCode = r.signal !== null ? 128 + r.signal : (r.exitCode ?? 1); // as a shell reports it
  return { stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), exitCode };
};

/** Poll pause between the rounds of a terminal session when nothing came (the client wakes early on a keystroke). */
const TERMINAL_POLL_MS = 150;
/** Each session's bytes of a character cut at the end of the last round. */
const carried = new Map<string, Buffer>();

/** One round of an open shell: keystrokes in, what the terminal printed out; its status at the end. */
async function terminalRound(req: ToolRequest): Promise<ToolResult> {
  const id = req.cursor ?? '';
  const session = terminalSessions.get(req.actor, id);
  let round;
  try {
    round = await session.round(Buffer.from(req.input ?? '', 'base64'));
  } catch (e) {
    carried.delete(id);
    await terminalSessions.end(id);
    throw e;
  }
  // A character cut at the round's end is held back and sent whole with the next round.
  const bytes = Buffer.concat([carried.get(id) ?? Buffer.alloc(0), round.output]);
  const whole = round.exitCode !== undefined ? bytes : completeUtf8(bytes);
  carried.set(id, bytes.subarray(whole.length));
  const text = whole.toString('utf8');
  if (round.exitCode !== undefined) {
    carried.delete(id);
    await terminalSessions.end(id);
    return { stdout: text, stderr: '', exitCode: round.exitCode, terminal: true };
  }
  return { stdout: text, stderr: '', exitCode: 0, terminal: true, more: { cursor: id, waitMs: round.output.length > 0 ? 0 : TERMINAL_POLL_MS } };
}
