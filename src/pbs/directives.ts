/**
 * `#PBS` directives in a job script, found the way PBS's qsub finds them: only in the
 * leading block of blank lines and comments, which ends at the first executable line.
 */
import { UsageError } from '../errors.js';

export const DEFAULT_DIRECTIVE_PREFIX = '#PBS';

/** One directive line: its 1-based number, its text (trimmed) and its words. */
export interface Directive {
  line: number;
  text: string;
  args: string[];
}

export interface DirectiveScan {
  /** Directives in the leading block, in file order. */
  directives: Directive[];
  /** Directive-looking lines after the first executable line (PBS ignores them); args left empty. */
  ignored: Directive[];
  /** Line number of the first executable line, when there is one. */
  firstCommandLine?: number;
}

export interface DirectiveScanOptions {
  /** Directive prefix (`-C` / PBS_DPREFIX); an empty prefix means "no directives". */
  prefix?: string;
  /** Used in error messages: `<fileName>:<line>: <directive>: <problem>`. */
  fileName?: string;
}

/** The one error format for a bad directive, shared with the option parser. */
export function directiveError(fileName: string, d: Pick<Directive, 'line' | 'text'>, problem: string): UsageError {
  return new UsageError(`${fileName}:${d.line}: ${d.text}: ${problem}`);
}

/**
 * PBS's rule for "not executable": blank, starting with `#` after optional white space,
 * or `:` in column 1 (the old Bourne-shell comment); `#!` lines count as comments too.
 */
export function isExecutableLine(line: string): boolean {
  if (line.startsWith(':')) return false;
  const t = line.trimStart();
  return t !== '' && !t.startsWith('#');
}

/** The directive body after the prefix, or undefined when the line is not a directive. */
function directiveBody(line: string, prefix: string): string | undefined {
  if (prefix === '') return undefined;
  const t = line.trimStart();
  if (!t.startsWith(prefix)) return undefined;
  const rest = t.slice(prefix.length);
  // `#PBSfoo` is an ordinary comment: the prefix must end at white space or end of line.
  if (rest !== '' && !/^\s/.test(rest)) return undefined;
  return rest;
}

/**
 * Splits a directive body into words: white space separates, '...' and "..." quote,
 * a backslash escapes the next character (inside "..." only `"` and `\`), and an unquoted
 * word starting with `#` begins a trailing comment. Throws on an unterminated quote.
 */
export function splitDirectiveWords(body: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\' && (body[i + 1] === '"' || body[i + 1] === '\\')) word += body[++i];
      else word += c;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (c === '#' && word === undefined) {
      break;
    } else if (c === '"' || c === "'") {
      quote = c;
      word ??= '';
    } else if (c === '\\' && i + 1 < body.length) {
      word = (word ?? '') + body[++i];
    } else {
      word = (word ?? '') + c;
    }
  }
  if (quote !== undefined) throw new UsageError(`unterminated ${quote} quote`);
  if (word !== undefined) words.push(word);
  return words;
}

/** Scans a job script for directives; lines may end in \n or \r\n. */
export function extractDirectives(script: string, options: DirectiveScanOptions = {}): DirectiveScan {
  const prefix = options.prefix ?? DEFAULT_DIRECTIVE_PREFIX;
  const fileName = options.fileName ?? 'script';
  const scan: DirectiveScan = { directives: [], ignored: [] };
  const lines = script.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].replace(/\r$/, '');
    const body = directiveBody(raw, prefix);
    if (body !== undefined && scan.firstCommandLine !== undefined) {
      scan.ignored.push({ line: i + 1, text: raw.trim(), args: [] });
    } else if (body !== undefined) {
      const d = { line: i + 1, text: raw.trim() };
      let args: string[];
      try {
        args = splitDirectiveWords(body);
      } catch (err) {
        throw directiveError(fileName, d, (err as Error).message);
      }
      if (args.length > 0) scan.directives.push({ ...d, args });
    } else if (scan.firstCommandLine === undefined && isExecutableLine(raw)) {
      scan.firstCommandLine = i + 1;
    }
  }
  return scan;
}
