/**
 * gcqsub's command line and a script's #PBS directives -> a job submission. Pure: files
 * come through ctx.readFile, and when the script is not there yet the answer is
 * `{ kind: 'needFile' }` so the server can ask the client for it (docs/PROTOCOL.md).
 *
 * Split by concern: qsub-types (shapes), qsub-argv (option table, scanning, yargs, help),
 * qsub-interpret (each option's meaning, #PBS lines), qsub-spec (the JobSpec). This module
 * decides what the operands are and is the one import path for the rest of the code.
 */
import { UsageError } from '../errors.js';
import { DEFAULT_DIRECTIVE_PREFIX } from './directives.js';
import { parseTokens, qsubHelp, scanArgv } from './qsub-argv.js';
import { interpret, mergeSets, scriptOptions } from './qsub-interpret.js';
import { buildJob } from './qsub-spec.js';
import { STDIN, type QsubContext, type QsubResult } from './qsub-types.js';

export type { Dependency, DependencyType } from './option-values.js';
export type { ChunkRequest } from './resources.js';
export type { ArraySpec } from './units.js';
export { qsubHelp } from './qsub-argv.js';
export { STDIN, type QsubContext, type QsubHelp, type QsubJob, type QsubNeedFile, type QsubResult } from './qsub-types.js';

const SCRIPT_SUFFIX = /\.(sh|bash|csh|tcsh|ksh|zsh|pbs|qsub|job)$/i;

/** A bare program name (`python3`, `hostname`), not a path and not a script's file name. */
function looksLikeCommand(operand: string): boolean {
  return !operand.includes('/') && !SCRIPT_SUFFIX.test(operand) && /^[A-Za-z0-9_+.-]+$/.test(operand);
}

/**
 * Parses `gcqsub [options] script [args]` or `gcqsub [options] -- command [args]`. An operand
 * without `--` is a script, as in PBS, when such a file exists; a bare program name that is
 * no file (`gcqsub python3 prog.py`) is a command. Throws UsageError on any malformed input.
 */
export function parseQsub(argv: string[], ctx: QsubContext): QsubResult {
  if (!ctx.cwd.startsWith('/')) throw new UsageError(`the working directory "${ctx.cwd}" is not an absolute path`);
  const scanned = scanArgv(argv);
  if (scanned.help) return { kind: 'help', help: qsubHelp() };
  const cmdline = interpret(parseTokens(scanned.tokens), ctx, 'command line');

  if (scanned.dashDash) {
    if (scanned.operands.length === 0) throw new UsageError('-- must be followed by a command');
    return buildJob(cmdline, { kind: 'argv', argv: scanned.operands }, ctx);
  }
  // -I alone: no script to read (stdin is the terminal the shell will use).
  if (cmdline.interactive && scanned.operands.length === 0) return buildJob(cmdline, { kind: 'argv', argv: [] }, ctx);
  // No operand: the script comes on standard input, as in PBS (the client sends it when
  // its stdin is not a terminal, and reports it missing when it is).
  const [path = STDIN, ...args] = scanned.operands;
  const text = ctx.readFile?.(path);
  if (text === undefined && path === STDIN) {
    if (!ctx.isMissing?.(path)) return { kind: 'needFile', needFile: path };
    throw new UsageError('no job script given: use gcqsub [options] script, gcqsub [options] -- command [args], or pipe a script into gcqsub');
  }
  if (path === STDIN && text !== undefined && text.trim() === '') {
    throw new UsageError('no job script given: standard input was empty (give a script file, or gcqsub [options] -- command [args])');
  }
  if (text === undefined) {
    if (!ctx.isMissing?.(path)) return { kind: 'needFile', needFile: path };
    // Copper's own form, `gcqsub python3 prog.py`: an operand that is no file in the working
    // directory and does not look like a script path is a command, as if after `--`.
    if (looksLikeCommand(path)) return buildJob(cmdline, { kind: 'argv', argv: scanned.operands }, ctx);
    throw new UsageError(`script file ${path}: no such file`);
  }

  const prefix = cmdline.prefix ?? ctx.env['PBS_DPREFIX'] ?? DEFAULT_DIRECTIVE_PREFIX;
  const fromScript = scriptOptions(path === STDIN ? 'STDIN' : path, text, prefix, ctx);
  return buildJob(mergeSets(fromScript, cmdline), { kind: 'script', path, text, args }, ctx);
}
