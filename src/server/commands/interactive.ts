/**
 * gcqsub -I: the client side of an interactive job, as rounds of /v1/cli (docs/PROTOCOL.md).
 * The job itself is an ordinary job whose command runs on a pseudo-terminal in its clone
 * (ExecSpec.terminal); these rounds wait for it to start (PBS's "qsub: waiting for job N to
 * start"), then carry keystrokes in and what the terminal printed out until the job is F
 * ("qsub: job N completed"), the client's exit status being the job's.
 *
 * Nothing here holds the session: the cursor carries the job and the offset read so far, so a
 * client that goes away leaves the job running until its shell exits or its walltime ends,
 * and `gcqsub -I --attach ID` picks it up again from near the end of what it printed.
 */
import type { JobTerminal } from '../../drivers/driver.js';
import { UsageError } from '../../errors.js';
import type { JobRecord, JobState } from '../../queue/job.js';
import type { ToolRequest, ToolResult, ToolServices } from './tool.js';
import { lookJob } from './running-job.js';
import { completeUtf8 } from './gcqpeek.js';

/** PBS's messages, word for word (with the job's full id). */
export const waitingLine = (id: string): string => `qsub: waiting for job ${id} to start\n`;
export const readyLine = (id: string): string => `qsub: job ${id} ready\n\n`;
export const completedLine = (id: string): string => `qsub: job ${id} completed\n`;
export const deletedLine = (id: string): string => `qsub: job ${id} deleted\n`;

const ATTACH_USAGE = 'usage: gcqsub -I --attach job_identifier';

/** Bytes of terminal output per round. */
const ROUND_BYTES = 64 * 1024;
/** Pause between rounds while the job waits to start (a Ctrl-C wakes the client early). */
const WAIT_POLL_MS = 1000;
/** Pause between rounds of an attached terminal with nothing new (a keystroke wakes the client). */
const TERMINAL_POLL_MS = 150;
/** A client attaching again is shown this much of what the terminal printed last. */
const REATTACH_TAIL_BYTES = 4096;
/** Exit status of a client whose Ctrl-C deleted the job while it waited (as a shell's for SIGINT). */
export const INTERRUPTED_EXIT = 130;

/** States in which an interactive job has not started its terminal yet. */
const WAITING: ReadonlySet<JobState> = new Set<JobState>(['Q', 'H', 'W', 'S']);

/** Where a client is: waiting for the job (fresh, or attaching again) or on its terminal at an offset. */
export type Phase = 'wait' | 'rewait' | 'on';

export interface InteractiveCursor {
  phase: Phase;
  offset: number;
  jobId: string;
}

const CURSOR_PREFIX = 'qsub-I';

export function formatCursor(c: InteractiveCursor): string {
  return `${CURSOR_PREFIX}:${c.phase}:${c.offset}:${c.jobId}`;
}

/** The cursor of an interactive round, or undefined for another tool's cursor. */
export function parseCursor(text: string | undefined): InteractiveCursor | undefined {
  if (text === undefined) return undefined;
  const m = /^qsub-I:(wait|rewait|on):(\d{1,15}):(\S{1,200})$/.exec(text);
  if (!m) return undefined;
  return { phase: m[1] as Phase, offset: Number(m[2]), jobId: m[3] };
}

/**
 * `gcqsub -I --attach ID` (also `--attach=ID`, -I optional): the job id, or undefined when
 * argv does not ask to attach. Only what comes before `--` counts (after it, a command's own).
 */
export function parseAttach(argv: readonly string[]): string | undefined {
  const end = argv.indexOf('--');
  const opts = end < 0 ? argv : argv.slice(0, end);
  if (!opts.some((a) => a === '--attach' || a.startsWith('--attach='))) return undefined;
  if (end >= 0) throw new UsageError(`--attach goes alone\n${ATTACH_USAGE}`);
  const rest = opts.filter((a) => a !== '-I');
  let id: string | undefined;
  if (rest.length === 1 && rest[0].startsWith('--attach=')) id = rest[0].slice('--attach='.length);
  else if (rest.length === 2 && rest[0] === '--attach') id = rest[1];
  else throw new UsageError(`--attach goes alone\n${ATTACH_USAGE}`);
  if (id === '' || id.startsWith('-')) throw new UsageError(`--attach needs a job id\n${ATTACH_USAGE}`);
  return id;
}

/** The client's exit status once the job is F: the job's own, as a shell reports it. */
export function exitOf(job: JobRecord): number {
  const st = job.exitStatus;
  if (st === undefined || st < 0) return 1;
  return st > 255 ? st - 256 + 128 : st;
}

/** The first answer after an interactive job was queued: PBS's waiting line, then rounds. */
export function startInteractive(job: JobRecord, warnings: string): ToolResult {
  return waitAnswer(job.id, 'wait', waitingLine(job.id), warnings, 0);
}

/** `gcqsub -I --attach ID`: the same rounds, for a job submitted earlier. */
export async function attachInteractive(req: ToolRequest, s: ToolServices, idText: string): Promise<ToolResult> {
  const job = await interactiveJob(s, req, idText);
  if (!req.terminal) throw new UsageError('-I --attach needs a terminal: run it from an interactive shell');
  if (job.state === 'F') return ended(job);
  const first = WAITING.has(job.state) ? waitingLine(job.id) : '';
  return waitAnswer(job.id, 'rewait', first, '', 0);
}

/** One round of a client of an interactive job (its cursor says where it is). */
export async function interactiveRound(req: ToolRequest, s: ToolServices, cur: InteractiveCursor): Promise<ToolResult> {
  const job = await interactiveJob(s, req, cur.jobId);
  if (cur.phase === 'on') return terminalRound(req, s, job, cur.offset);
  if (req.interrupt === true) {
    // Ctrl-C while it waits: the job goes (a running one is stopped, as by gcqdel).
    if (job.state !== 'F') await s.scheduler.delete(req.actor, job.id);
    return { stdout: deletedLine(job.id), stderr: '', exitCode: INTERRUPTED_EXIT };
  }
  if (job.state === 'F') return ended(job);
  const term = WAITING.has(job.state) ? undefined : terminalOf(s, job);
  const printed = await term?.read(0, 0).catch(() => undefined);
  if (!term || printed === undefined) return waitAnswer(job.id, cur.phase, '', '', WAIT_POLL_MS);
  // Ready: a fresh client takes everything from the start, one attaching again the end of it.
  const offset = cur.phase === 'rewait' ? await tailOffset(term) : 0;
  return {
    stdout: readyLine(job.id),
    stderr: '',
    exitCode: 0,
    terminal: true,
    more: { cursor: formatCursor({ phase: 'on', offset, jobId: job.id }), waitMs: 0 },
  };
}

async function interactiveJob(s: ToolServices, req: ToolRequest, idText: string): Promise<JobRecord> {
  const job = await lookJob(s, req.actor, idText);
  if (!job.spec.interactive) throw new UsageError(`job ${job.id} is not an interactive job (gcqsub -I); gcqexec ${job.id} opens a shell beside it`);
  return job;
}

function waitAnswer(jobId: string, phase: Phase, stdout: string, stderr: string, waitMs: number): ToolResult {
  return { stdout, stderr, exitCode: 0, interruptible: true, more: { cursor: formatCursor({ phase, offset: 0, jobId }), waitMs } };
}

/** The job ended before this client saw its terminal (deleted, failed to start, walltime...). */
function ended(job: JobRecord): ToolResult {
  // Not by its shell's exit (deleted, walltime, failed to start): the comment says how.
  const why = job.endReason !== 'exit' && job.comment ? `qsub: job ${job.id}: ${job.comment}\n` : '';
  return { stdout: completedLine(job.id), stderr: why, exitCode: exitOf(job) };
}

function terminalOf(s: ToolServices, job: JobRecord): JobTerminal | undefined {
  if (!job.cloneId || !s.clones?.jobTerminal) return undefined;
  try {
    return s.clones.jobTerminal(job.cloneId);
  } catch {
    return undefined; // the clone is going (or not there yet)
  }
}

/** Where a client attaching again starts: the last few KiB, from a line's start. */
async function tailOffset(term: JobTerminal): Promise<number> {
  const size = await term.size();
  const from = Math.max(0, size - REATTACH_TAIL_BYTES);
  if (from === 0) return 0;
  const bytes = (await term.read(from, REATTACH_TAIL_BYTES)) ?? Buffer.alloc(0);
  const nl = bytes.indexOf(0x0a);
  return nl < 0 ? from : from + nl + 1;
}

/** Keystrokes in, output out; once the job is F, PBS's last line and the job's status. */
async function terminalRound(req: ToolRequest, s: ToolServices, job: JobRecord, offset: number): Promise<ToolResult> {
  const term = job.state === 'F' ? undefined : terminalOf(s, job);
  const input = Buffer.from(req.input ?? '', 'base64');
  // The clone may be going away under us (the shell ended): what cannot be read now is not there.
  if (term && input.length > 0) await term.write(input).catch(() => undefined);
  const data = term ? ((await term.read(offset, ROUND_BYTES).catch(() => undefined)) ?? Buffer.alloc(0)) : Buffer.alloc(0);
  const whole = completeUtf8(data);
  if (whole.length > 0 || job.state !== 'F') {
    const next = { phase: 'on' as const, offset: offset + whole.length, jobId: job.id };
    return {
      stdout: whole.toString('utf8'),
      stderr: '',
      exitCode: 0,
      terminal: true,
      more: { cursor: formatCursor(next), waitMs: whole.length > 0 ? 0 : TERMINAL_POLL_MS },
    };
  }
  return ended(job);
}
