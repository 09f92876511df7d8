import type { OutputStream } from '../../drivers/driver.js';
import { NotFoundError, StateError, UsageError } from '../../errors.js';
import type { JobState } from '../../queue/job.js';
import type { Tool, ToolResult } from './tool.js';
import { parseArgs } from './args.js';
import { lookJob, runningClone } from './running-job.js';

interface PeekArgs {
  f?: boolean;
  e?: boolean;
  _: Array<string | number>;
}

/** Bytes per round: the answer is JSON text, well under the client's limits. */
export const PEEK_CHUNK = 256 * 1024;
/** Pause between the rounds of `-f` when nothing new came (and while the job waits to start). */
export const FOLLOW_WAIT_MS = 1000;

/** States a followed job may still leave for R: -f waits through them. */
const NOT_YET: ReadonlySet<JobState> = new Set<JobState>(['Q', 'H', 'W']);

/**
 * gcqpeek [-f] [-e] ID: a running job's stdout (-e: stderr) as it is so far, read from its
 * clone through the driver; -f follows it until the job ends (the client asks again with
 * the answer's cursor, the byte offset reached). Owner or admin only.
 */
export const gcqpeek: Tool = async (req, s) => {
  const p = await parseArgs<PeekArgs>(
    'gcqpeek',
    req.argv,
    (y) =>
      y
        .usage('gcqpeek [-f] [-e] job_identifier')
        .option('f', { type: 'boolean', describe: 'follow the output until the job ends' })
        .option('e', { type: 'boolean', describe: 'the job\'s stderr instead of its stdout' })
        .demandCommand(1, 'a job id is required')
        .check((a) => {
          if (a._.length > 1) throw new Error(`one job id at a time (got ${a._.length})`);
          return true;
        }),
    true,
  );
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const follow = p.args.f === true;
  const stream: OutputStream = p.args.e ? 'stderr' : 'stdout';
  const offset = parseCursor(req.cursor);
  const driver = s.clones;
  if (!driver?.peek) throw new UsageError('this gcd\'s driver cannot read running jobs\' output');

  const job = await lookJob(s, req.actor, String(p.args._[0]));
  const more = (waitMs: number, next: number): ToolResult['more'] => ({ cursor: String(next), waitMs });
  const answer = (data: Buffer, goOn: boolean): ToolResult => {
    const whole = completeUtf8(data);
    const out = whole.toString('utf8');
    const next = offset + whole.length;
    if (data.length >= PEEK_CHUNK) return { stdout: out, stderr: '', exitCode: 0, more: more(0, next) };
    return goOn ? { stdout: out, stderr: '', exitCode: 0, more: more(FOLLOW_WAIT_MS, next) } : { stdout: out, stderr: '', exitCode: 0 };
  };
  if (NOT_YET.has(job.state) && follow) return { stdout: '', stderr: '', exitCode: 0, more: more(FOLLOW_WAIT_MS, offset) };
  // A joined job (-j oe/eo) has one output file: -e reads it too.
  const file: OutputStream = job.spec.join === 'n' ? stream : 'stdout';
  if (job.state === 'F' && req.cursor !== undefined) {
    // Followed to its end: what it wrote after the last round, from the copy kept a while.
    return answer((await s.scheduler.endedOutputs.read(job.id, file, offset, PEEK_CHUNK)) ?? Buffer.alloc(0), false);
  }
  const cloneId = runningClone(job);
  let peeked;
  try {
    peeked = await driver.peek(cloneId, file, offset, PEEK_CHUNK);
  } catch (e) {
    // The clone went away between the look and the read: the job is ending.
    if (!(e instanceof NotFoundError)) throw e;
    if (follow) return { stdout: '', stderr: '', exitCode: 0, more: more(FOLLOW_WAIT_MS, offset) };
    throw new StateError(`job ${job.id} is ending: its output is on its way to ${job.outputPath ?? job.spec.stdoutPath ?? 'its output file'}`);
  }
  return answer(peeked.data, follow);
};

/** The byte offset a cursor carries (0 for the first round). */
function parseCursor(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  if (!/^\d{1,15}$/.test(cursor)) throw new UsageError(`bad cursor '${cursor.slice(0, 20)}'`);
  return Number(cursor);
}

/**
 * The bytes up to the last whole UTF-8 character: a character cut by the round's end is sent
 * whole next round, not as two replacement characters.
 */
export function completeUtf8(b: Buffer): Buffer {
  // Look back at most 3 bytes for the start of a multi-byte sequence.
  for (let i = b.length - 1; i >= 0 && i >= b.length - 4; i--) {
    const c = b[i]!;
    if ((c & 0x80) === 0) return b; // ASCII: everything before is whole
    if ((c & 0xc0) === 0xc0) {
      const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
      return b.length - i >= need ? b : b.subarray(0, i);
    }
  }
  return b;
}
