/**
 * gcqsub's option table and its argv scanning: a getopt-style scan (PBS's `-Nname`, `-hV`)
 * hands normalised tokens to one strict yargs parser, which also writes the help text.
 */
import yargs from 'yargs';
import type { Options } from 'yargs';
import { UsageError, errorMessage } from '../errors.js';

interface OptionDef {
  name: string;
  takesValue: boolean;
  describe: string;
}

const OPTIONS: readonly OptionDef[] = [
  { name: 'N', takesValue: true, describe: 'job name (default: the script or command name)' },
  { name: 'o', takesValue: true, describe: 'stdout file, relative to the working directory; a directory gets <name>.o<seq>' },
  { name: 'e', takesValue: true, describe: 'stderr file, as -o' },
  { name: 'j', takesValue: true, describe: 'join streams: oe, eo or n' },
  { name: 'l', takesValue: true, describe: 'resources: walltime=HH:MM:SS, ncpus=N, mem=8gb, select=N:ncpus=C:mem=M, nodes=N:ppn=C' },
  { name: 'v', takesValue: true, describe: 'export VAR[=value],... to the job' },
  { name: 'V', takesValue: false, describe: 'export your whole environment to the job' },
  { name: 'q', takesValue: true, describe: 'queue' },
  { name: 'p', takesValue: true, describe: 'priority, -1024..1023; higher runs first' },
  { name: 'W', takesValue: true, describe: 'depend=afterok:ID[:ID][,afternotok:..,afterany:..] or block=true or stageout=none|PATH[,PATH]' },
  { name: 'J', takesValue: true, describe: 'array job: X-Y[:Z][%max]' },
  { name: 't', takesValue: true, describe: 'array job, Torque style: 1-10%6 or 1,3,5-7' },
  { name: 'h', takesValue: false, describe: 'submit the job held' },
  { name: 'a', takesValue: true, describe: 'start no earlier than [[[[CC]YY]MM]DD]hhmm[.SS]' },
  { name: 'r', takesValue: true, describe: 'rerunnable after a gcd restart: y or n' },
  { name: 'm', takesValue: true, describe: 'mail when the job aborts (a, default), begins (b), ends (e); j: array tasks too; n: none' },
  { name: 'M', takesValue: true, describe: 'mail addresses user[@host],... (default: the job owner)' },
  { name: 'I', takesValue: false, describe: 'interactive job: once it runs, a login shell in its clone on this terminal (-- command: that command instead)' },
  { name: 'G', takesValue: false, describe: 'interactive GUI job (not supported)' },
  { name: 'S', takesValue: true, describe: 'interpreter that runs the script, e.g. /bin/bash' },
  { name: 'C', takesValue: true, describe: 'directive prefix (default #PBS; "" ignores directives)' },
  { name: 'A', takesValue: true, describe: 'account string (Account_Name), shown by gcqstat -f' },
  { name: 'P', takesValue: true, describe: 'project, shown by gcqstat -f' },
  { name: 'z', takesValue: false, describe: 'print no job id' },
  { name: 'd', takesValue: true, describe: 'working directory of the job (Torque; default: the current one)' },
  { name: 'w', takesValue: true, describe: 'working directory of the job (Torque, as -d)' },
  { name: 'F', takesValue: true, describe: 'arguments for the script (Torque): -F "a b c"' },
  { name: 'k', takesValue: true, describe: 'keep output on the execution host (accepted; output is delivered at the end)' },
  { name: 'R', takesValue: true, describe: 'remove output files (accepted; ignored)' },
  { name: 'c', takesValue: true, describe: 'checkpointing (accepted; ignored)' },
  { name: 'u', takesValue: true, describe: 'run as user (accepted; the job runs as your headnode account)' },
  { name: 'n', takesValue: false, describe: 'node-exclusive (Torque; a clone is always exclusive)' },
  { name: 'X', takesValue: false, describe: 'X11 forwarding (accepted; ignored)' },
  { name: 'f', takesValue: false, describe: 'fault tolerant / foreground (accepted; ignored)' },
  { name: 'x', takesValue: false, describe: 'Torque interactive script (accepted; ignored)' },
  { name: 'b', takesValue: true, describe: 'Torque server retry seconds (accepted; ignored)' },
  { name: 'D', takesValue: true, describe: 'Torque root directory (accepted; ignored)' },
  { name: 'K', takesValue: true, describe: 'Torque kill delay (accepted; ignored)' },
  { name: 'T', takesValue: true, describe: 'Torque prologue/epilogue (accepted; ignored)' },
  { name: 'L', takesValue: true, describe: 'Torque NUMA resources (accepted; ignored)' },
  { name: 'cron', takesValue: true, describe: 'recurring job: "minute hour day month weekday" or @daily, @hourly...' },
  { name: 'attach', takesValue: true, describe: 'with -I: attach this terminal again to a running interactive job (after a dropped connection)' },
  { name: 'headnode', takesValue: true, describe: 'headnode that runs the job (on the host only)' },
  { name: 'help', takesValue: false, describe: 'show this help' },
];

const BY_NAME = new Map(OPTIONS.map((o) => [o.name, o]));

// --------------------------------------------------------- argv scanning

export interface ScannedArgs {
  /** Options normalised to `-X=value` / `--name=value` / `-X` for yargs. */
  tokens: string[];
  operands: string[];
  /** The operands followed an explicit `--` (a command, not a script). */
  dashDash: boolean;
  /** --help was given (handled here: yargs's own help would print and exit). */
  help: boolean;
}

/**
 * getopt-style scan: `-Nname` and `-hVNname` work as in PBS's qsub, a value is taken
 * verbatim even when it starts with "-" (`-p -10`), and scanning stops at the first
 * operand or `--`. Values are handed to yargs attached (`-N=-x`) so it never guesses.
 */
export function scanArgv(argv: readonly string[]): ScannedArgs {
  const tokens: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i];
    if (arg === '--') return { tokens, operands: argv.slice(i + 1), dashDash: true, help: tokens.includes('--help') };
    if (!arg.startsWith('-') || arg === '-') break;
    i = arg.startsWith('--') ? scanLong(argv, i, tokens) : scanShort(argv, i, tokens);
  }
  return { tokens, operands: argv.slice(i), dashDash: false, help: tokens.includes('--help') };
}

function scanLong(argv: readonly string[], i: number, tokens: string[]): number {
  const arg = argv[i];
  const eq = arg.indexOf('=');
  const name = arg.slice(2, eq < 0 ? undefined : eq);
  const def = BY_NAME.get(name);
  if (!def || name.length === 1) throw new UsageError(`unknown option ${arg.slice(0, eq < 0 ? undefined : eq)}`);
  if (!def.takesValue) {
    if (eq >= 0) throw new UsageError(`option --${name} takes no value`);
    tokens.push(`--${name}`);
    return i + 1;
  }
  if (eq >= 0) {
    tokens.push(arg);
    return i + 1;
  }
  if (i + 1 >= argv.length) throw new UsageError(`option --${name} needs a value`);
  tokens.push(`--${name}=${argv[i + 1]}`);
  return i + 2;
}

function scanShort(argv: readonly string[], i: number, tokens: string[]): number {
  const arg = argv[i];
  for (let k = 1; k < arg.length; k++) {
    const letter = arg[k];
    const def = BY_NAME.get(letter);
    if (!def) throw new UsageError(`unknown option -${letter}`);
    if (!def.takesValue) {
      tokens.push(`-${letter}`);
      continue;
    }
    if (k + 1 < arg.length) {
      tokens.push(`-${letter}=${arg.slice(k + 1)}`);
      return i + 1;
    }
    if (i + 1 >= argv.length) throw new UsageError(`option -${letter} needs a value`);
    tokens.push(`-${letter}=${argv[i + 1]}`);
    return i + 2;
  }
  return i + 1;
}

// ------------------------------------------------------------------ yargs

const USAGE = [
  'gcqsub [options] script [script-args...]',
  'gcqsub [options] -- command [args...]',
  'gcqsub -I [options] [script | -- command [args...]]',
  'gcqsub -I --attach job_identifier',
  '',
  'Options may also be given as #PBS lines at the top of the script; the command line wins.',
].join('\n');

function buildParser() {
  const options: Record<string, Options> = {};
  for (const o of OPTIONS) {
    if (o.name !== 'help') options[o.name] = { type: o.takesValue ? 'string' : 'boolean', describe: o.describe };
  }
  return yargs([])
    .scriptName('gcqsub')
    .usage(USAGE)
    .options(options)
    .parserConfiguration({
      'halt-at-non-option': true,
      'short-option-groups': false,
      'camel-case-expansion': false,
      'dot-notation': false,
      'parse-numbers': false,
      'parse-positional-numbers': false,
      'boolean-negation': false,
      'duplicate-arguments-array': true,
      'flatten-duplicate-arrays': true,
      'strip-aliased': true,
    })
    .locale('en')
    .help(false)
    .version(false)
    .strictOptions(true)
    .wrap(100)
    .exitProcess(false)
    .fail((msg, err) => {
      throw err instanceof UsageError ? err : new UsageError(msg || errorMessage(err));
    });
}

/**
 * One parser for every call: a yargs instance costs about a millisecond and a package.json
 * lookup to build, and parseSync(tokens) leaves no state behind (failures included).
 */
let parser: ReturnType<typeof buildParser> | undefined;

function getParser(): ReturnType<typeof buildParser> {
  parser ??= buildParser();
  return parser;
}

/** gcqsub's help text. */
export function qsubHelp(): string {
  let text = '';
  getParser().showHelp((s: string) => {
    text = s;
  });
  return text;
}
export interface RawOptions {
  values: Map<string, string[]>;
  flags: Set<string>;
}

export function parseTokens(tokens: string[]): RawOptions {
  const parsed = getParser().parseSync(tokens.filter((t) => t !== '--help')) as Record<string, unknown>;
  const raw: RawOptions = { values: new Map(), flags: new Set() };
  for (const o of OPTIONS) {
    const v = parsed[o.name];
    if (v === undefined || v === false) continue;
    if (o.takesValue) raw.values.set(o.name, (Array.isArray(v) ? v : [v]).map(String));
    else raw.flags.add(o.name);
  }
  const rest = parsed['_'];
  if (Array.isArray(rest) && rest.length > 0) throw new UsageError(`unexpected argument "${String(rest[0])}"`);
  return raw;
}
