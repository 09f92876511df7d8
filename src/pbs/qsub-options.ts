/**
 * gcqsub's command line and a script's #PBS directives -> a job submission. Pure: files
 * come through ctx.readFile, and when the script is not there yet the answer is
 * `{ kind: 'needFile' }` so the server can ask the client for it (docs/PROTOCOL.md).
 */
import { posix } from 'node:path';
import yargs from 'yargs';
import type { Options } from 'yargs';
import { UsageError, errorMessage } from '../errors.js';
import type { JobSpec, JoinMode } from '../queue/job.js';
import { DEFAULT_DIRECTIVE_PREFIX, directiveError, extractDirectives, splitDirectiveWords } from './directives.js';
import type { Directive } from './directives.js';
import {
  MAX_JOB_NAME,
  parseHeadnodeName,
  parseJoin,
  parseMailPoints,
  parseMailUsers,
  parsePriority,
  parseProject,
  parseQueue,
  parseShell,
  parseVariableList,
  parseWAttributes,
  parseYesNo,
  validateCron,
  validateJobName,
} from './option-values.js';
import type { Dependency } from './option-values.js';
import { mergeResources, parseResourceList, resolveResources } from './resources.js';
import type { ChunkRequest, ResourceRequest } from './resources.js';
import { parseArrayList, parseArrayRange, parsePbsDateTime } from './units.js';
import type { ArraySpec } from './units.js';

export type { Dependency, DependencyType } from './option-values.js';
export type { ChunkRequest } from './resources.js';
export type { ArraySpec } from './units.js';

export interface QsubContext {
  /** The submitter's working directory (absolute, inside the headnode). */
  cwd: string;
  /** The submitter's environment (for -V and bare -v names). */
  env: Record<string, string>;
  user: string;
  group: string;
  /** The calling headnode; empty on the host, where --headnode names it. */
  headnode: string;
  submitHost: string;
  /** Epoch ms, for -a and --cron. */
  now: number;
  defaultQueue: string;
  /** The script's text by the path as typed (relative to cwd); undefined when not available. */
  readFile?: (path: string) => string | undefined;
  /** The account's groups inside the headnode, when the client sent them (-W group_list is checked against them). */
  accountGroups?: readonly string[];
  /** The client looked for this path and it does not exist (see parseQsub's operand rule). */
  isMissing?: (path: string) => boolean;
  /** Is this absolute path a directory? Lets -o/-e name a directory without a trailing "/". */
  isDirectory?: (path: string) => boolean;
  /** The caller is the host administrator (gcd's Unix socket): --headnode is accepted there only. */
  hostSide?: boolean;
  /** Custom `-l` resources the admin declared (quotas.yaml `resources:`). */
  customResources?: readonly string[];
}

/** A parsed submission. `spec` leaves seq-dependent defaults (output paths) to the server. */
export interface QsubJob {
  kind: 'job';
  spec: JobSpec;
  /** -W block=true: the client waits for the job and exits with its status. */
  block: boolean;
  /** -h: submitted held. */
  hold: boolean;
  /** -a: not before this epoch ms. */
  beginAt?: number;
  array?: ArraySpec;
  depend?: Dependency[];
  cron?: string;
  warnings: string[];
  /** select / nodes chunks as asked (spec.resources holds their sum). */
  chunks?: ChunkRequest[];
  /** -o/-e named a directory: the default file name `<name>.o<seq>` goes inside it. */
  outputDirs?: { stdout?: string; stderr?: string };
  /** -z: print no job id. */
  quiet: boolean;
}

/** The script named on the command line must be sent by the client first. */
export interface QsubNeedFile {
  kind: 'needFile';
  needFile: string;
}

export interface QsubHelp {
  kind: 'help';
  help: string;
}

export type QsubResult = QsubJob | QsubNeedFile | QsubHelp;

// ------------------------------------------------------------ option table

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
  { name: 'W', takesValue: true, describe: 'depend=afterok:ID[:ID][,afternotok:..,afterany:..] or block=true' },
  { name: 'J', takesValue: true, describe: 'array job: X-Y[:Z][%max]' },
  { name: 't', takesValue: true, describe: 'array job, Torque style: 1-10%6 or 1,3,5-7' },
  { name: 'h', takesValue: false, describe: 'submit the job held' },
  { name: 'a', takesValue: true, describe: 'start no earlier than [[[[CC]YY]MM]DD]hhmm[.SS]' },
  { name: 'r', takesValue: true, describe: 'rerunnable after a gcd restart: y or n' },
  { name: 'm', takesValue: true, describe: 'mail when the job aborts (a, default), begins (b), ends (e); j: array tasks too; n: none' },
  { name: 'M', takesValue: true, describe: 'mail addresses user[@host],... (default: the job owner)' },
  { name: 'I', takesValue: false, describe: 'interactive job (not supported)' },
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
  { name: 'headnode', takesValue: true, describe: 'headnode that runs the job (on the host only)' },
  { name: 'help', takesValue: false, describe: 'show this help' },
];

const BY_NAME = new Map(OPTIONS.map((o) => [o.name, o]));

// --------------------------------------------------------- argv scanning

interface ScannedArgs {
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
function scanArgv(argv: readonly string[]): ScannedArgs {
  const tokens: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i] as string;
    if (arg === '--') return { tokens, operands: argv.slice(i + 1), dashDash: true, help: tokens.includes('--help') };
    if (!arg.startsWith('-') || arg === '-') break;
    i = arg.startsWith('--') ? scanLong(argv, i, tokens) : scanShort(argv, i, tokens);
  }
  return { tokens, operands: argv.slice(i), dashDash: false, help: tokens.includes('--help') };
}

function scanLong(argv: readonly string[], i: number, tokens: string[]): number {
  const arg = argv[i] as string;
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
  tokens.push(`--${name}=${argv[i + 1] as string}`);
  return i + 2;
}

function scanShort(argv: readonly string[], i: number, tokens: string[]): number {
  const arg = argv[i] as string;
  for (let k = 1; k < arg.length; k++) {
    const letter = arg[k] as string;
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
    tokens.push(`-${letter}=${argv[i + 1] as string}`);
    return i + 2;
  }
  return i + 1;
}

// ------------------------------------------------------------------ yargs

const USAGE = [
  'gcqsub [options] script [script-args...]',
  'gcqsub [options] -- command [args...]',
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

interface RawOptions {
  values: Map<string, string[]>;
  flags: Set<string>;
}

function parseTokens(tokens: string[]): RawOptions {
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

// ------------------------------------------------------------ interpretation

/** What one source (the command line, or one directive line) asked for. */
interface OptionSet {
  name?: string;
  stdout?: string;
  stderr?: string;
  join?: JoinMode;
  resources: ResourceRequest;
  vars: Record<string, string>;
  exportAll?: boolean;
  queue?: string;
  priority?: number;
  block?: boolean;
  depend?: Dependency[];
  array?: ArraySpec;
  hold?: boolean;
  beginAt?: number;
  rerunnable?: boolean;
  mailPoints?: string;
  mailUsers?: string[];
  shell?: string;
  prefix?: string;
  account?: string;
  project?: string;
  groupList?: string;
  umask?: string;
  maxRunSubjobs?: number;
  quiet?: boolean;
  /** -d / -w: the job's working directory, as typed. */
  workdir?: string;
  /** -F: extra script arguments. */
  scriptArgs?: string[];
  cron?: string;
  headnode?: string;
  warnings: string[];
}

type Source = 'command line' | 'directive';

function lastValue(raw: RawOptions, name: string): string | undefined {
  const v = raw.values.get(name);
  return v === undefined ? undefined : v[v.length - 1];
}

function interpretSimple(raw: RawOptions, set: OptionSet, source: Source): void {
  const get = (n: string): string | undefined => lastValue(raw, n);
  let v: string | undefined;
  if ((v = get('N')) !== undefined) set.name = validateJobName(v);
  if ((v = get('o')) !== undefined) set.stdout = v;
  if ((v = get('e')) !== undefined) set.stderr = v;
  if ((v = get('j')) !== undefined) set.join = parseJoin(v);
  if ((v = get('q')) !== undefined) set.queue = parseQueue(v);
  if ((v = get('p')) !== undefined) set.priority = parsePriority(v);
  if ((v = get('r')) !== undefined) set.rerunnable = parseYesNo(v, '-r');
  if ((v = get('m')) !== undefined) set.mailPoints = parseMailPoints(v);
  if ((v = get('M')) !== undefined) set.mailUsers = parseMailUsers(v);
  if ((v = get('S')) !== undefined) set.shell = parseShell(v);
  if ((v = get('A')) !== undefined) {
    if (v.trim() === '') throw new UsageError('-A: the account is empty');
    set.account = v;
  }
  if ((v = get('P')) !== undefined) set.project = parseProject(v);
  if ((v = get('d')) !== undefined || (v = get('w')) !== undefined) {
    if (v === '') throw new UsageError('-d: the working directory is empty');
    set.workdir = v;
  }
  if ((v = get('F')) !== undefined) set.scriptArgs = splitDirectiveWords(v);
  if (raw.flags.has('z')) set.quiet = true;
  interpretIgnored(raw, set);
  if ((v = get('C')) !== undefined) {
    if (source === 'directive') throw new UsageError('-C can only be given on the command line');
    set.prefix = v;
  }
  if ((v = get('headnode')) !== undefined) set.headnode = parseHeadnodeName(v);
  if (raw.flags.has('V')) set.exportAll = true;
  if (raw.flags.has('h')) set.hold = true;
}

/** Options with no meaning for a clone VM: accepted, each with one warning saying what Copper does. */
const IGNORED_FLAGS: Readonly<Record<string, string>> = {
  n: '-n ignored: a clone VM is always the job\'s alone',
  X: '-X ignored: X11 forwarding needs an interactive job; run graphical programs in your headnode',
  f: '-f ignored: a job survives a gcd restart when it is rerunnable (-r y)',
  x: '-x ignored: it only applies to interactive jobs',
};

const IGNORED_VALUES: Readonly<Record<string, string>> = {
  k: 'output is kept in the clone and delivered to -o/-e when the job ends',
  R: 'output files are always kept',
  c: 'Copper does not checkpoint jobs; a job lost by gcd is run again if rerunnable (-r y)',
  u: 'the job runs as the account that submitted it in your headnode',
  b: 'gcqsub reaches gcd at once or fails',
  D: 'the job sees the headnode\'s file system as it was at submission',
  K: 'gcqdel sends TERM, then KILL after a few seconds',
  T: 'Copper runs no prologue or epilogue scripts',
  L: 'NUMA requests have no meaning in one clone VM; use -l ncpus and mem',
};

function interpretIgnored(raw: RawOptions, set: OptionSet): void {
  for (const [flag, why] of Object.entries(IGNORED_FLAGS)) if (raw.flags.has(flag)) set.warnings.push(why);
  for (const [name, why] of Object.entries(IGNORED_VALUES)) {
    const v = lastValue(raw, name);
    if (v === undefined) continue;
    if (name === 'k' && !/^([oedn]+)$/.test(v)) throw new UsageError(`-k ${v}: use any of o, e, d, or n`);
    if (name === 'R' && !/^[oe]+$/.test(v)) throw new UsageError(`-R ${v}: use o, e or oe`);
    set.warnings.push(`-${name} ${v} ignored: ${why}`);
  }
}

function interpretLists(raw: RawOptions, set: OptionSet, ctx: QsubContext): void {
  const resourceOpts = { ...(ctx.customResources ? { custom: ctx.customResources } : {}), warnings: set.warnings };
  for (const l of raw.values.get('l') ?? []) set.resources = parseResourceList(l, set.resources, resourceOpts);
  for (const v of raw.values.get('v') ?? []) {
    const parsed = parseVariableList(v, ctx.env);
    Object.assign(set.vars, parsed.vars);
    set.warnings.push(...parsed.warnings);
  }
  for (const w of raw.values.get('W') ?? []) {
    const attrs = parseWAttributes(w);
    if (attrs.block !== undefined) set.block = attrs.block;
    if (attrs.depend !== undefined) set.depend = attrs.depend;
    if (attrs.groupList !== undefined) set.groupList = checkGroup(attrs.groupList, ctx);
    if (attrs.umask !== undefined) set.umask = attrs.umask;
    if (attrs.maxRunSubjobs !== undefined) set.maxRunSubjobs = attrs.maxRunSubjobs;
    set.warnings.push(...(attrs.warnings ?? []));
  }
}

function interpretTiming(raw: RawOptions, set: OptionSet, ctx: QsubContext): void {
  const J = lastValue(raw, 'J');
  const t = lastValue(raw, 't');
  if (J !== undefined && t !== undefined) throw new UsageError('-J and -t both ask for an array job; give one of them');
  if (J !== undefined) set.array = parseArrayRange(J, '-J');
  if (t !== undefined) set.array = parseArrayList(t, '-t');
  const a = lastValue(raw, 'a');
  if (a !== undefined) set.beginAt = parsePbsDateTime(a, ctx.now, '-a');
  const cron = lastValue(raw, 'cron');
  if (cron !== undefined) set.cron = validateCron(cron, ctx.now);
}

function interpret(raw: RawOptions, ctx: QsubContext, source: Source): OptionSet {
  for (const f of ['I', 'G']) {
    if (raw.flags.has(f)) {
      throw new UsageError(`-${f}: interactive jobs are not supported; run the command in your headnode, or submit it with gcqsub -- command`);
    }
  }
  const set: OptionSet = { resources: {}, vars: {}, warnings: [] };
  interpretSimple(raw, set, source);
  interpretLists(raw, set, ctx);
  interpretTiming(raw, set, ctx);
  return set;
}

/** `over` wins key by key; resources and -v variables merge per entry, warnings add up. */
function mergeSets(base: OptionSet, over: OptionSet): OptionSet {
  const out: OptionSet = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v;
  }
  out.resources = mergeResources(base.resources, over.resources);
  out.vars = { ...base.vars, ...over.vars };
  out.warnings = [...base.warnings, ...over.warnings];
  return out;
}

// ---------------------------------------------------------------- scripts

function applyDirective(d: Directive, fileName: string, ctx: QsubContext): OptionSet {
  try {
    const scanned = scanArgv(d.args);
    // `#PBS -l nodes=1:ppn=4 walltime=1:00:00`: Torque-era scripts leave out the second -l.
    if (!scanned.dashDash && scanned.tokens.some((t) => t.startsWith('-l=')) && scanned.operands.every((w) => /^[A-Za-z_]+=\S/.test(w))) {
      scanned.tokens.push(...scanned.operands.map((w) => `-l=${w}`));
      scanned.operands = [];
    }
    if (scanned.dashDash || scanned.operands.length > 0) {
      throw new UsageError(`unexpected argument "${scanned.dashDash ? '--' : (scanned.operands[0] as string)}"`);
    }
    if (scanned.help) throw new UsageError('unknown option --help');
    return interpret(parseTokens(scanned.tokens), ctx, 'directive');
  } catch (err) {
    if (err instanceof UsageError) throw directiveError(fileName, d, err.message);
    throw err;
  }
}

/** The script's directive options merged in file order (a later line overrides an earlier one). */
function scriptOptions(path: string, text: string, prefix: string, ctx: QsubContext): OptionSet {
  const scan = extractDirectives(text, { prefix, fileName: path });
  let set: OptionSet = { resources: {}, vars: {}, warnings: [] };
  for (const d of scan.directives) set = mergeSets(set, applyDirective(d, path, ctx));
  for (const d of scan.ignored) {
    set.warnings.push(`${path}:${d.line}: ${d.text}: ignored, directives after the first command (line ${scan.firstCommandLine}) do not count`);
  }
  if (scan.directives.length === 0 && /^#SBATCH\s/m.test(text)) {
    set.warnings.push(`${path}: its #SBATCH lines are Slurm's and are not read; write them as #PBS directives (e.g. #PBS -l ncpus=4,walltime=1:00:00)`);
  }
  if (text.includes('\r\n')) {
    set.warnings.push(`${path} has DOS line endings (\\r\\n); the shell will choke on them: convert it with dos2unix`);
  }
  return set;
}

// --------------------------------------------------------------- results

type JobForm = { kind: 'argv'; argv: string[] } | { kind: 'script'; path: string; text: string; args: string[] };

interface OutputTarget {
  path?: string;
  dir?: string;
}

/** -o/-e: `[host:]path`, relative to cwd; a trailing "/" or an existing directory means a directory. */
function resolveOutput(value: string, option: string, ctx: QsubContext, warnings: string[]): OutputTarget {
  let p = value;
  const host = /^([A-Za-z0-9][A-Za-z0-9.-]*):(.*)$/s.exec(value);
  if (host) {
    p = host[2] as string;
    if (host[1] !== ctx.headnode && host[1] !== ctx.submitHost) {
      warnings.push(`${option} ${value}: host ${host[1]} ignored; output is written inside the headnode`);
    }
  }
  if (p === '') throw new UsageError(`${option}: the path is empty`);
  const abs = posix.normalize(p.startsWith('/') ? p : posix.join(ctx.cwd, p));
  const trimmed = abs.length > 1 ? abs.replace(/\/+$/, '') : abs;
  if (p.endsWith('/') || ctx.isDirectory?.(trimmed) === true) return { dir: trimmed };
  return { path: trimmed };
}

function chooseHeadnode(asked: string | undefined, ctx: QsubContext): string {
  if (asked !== undefined) {
    if (!ctx.hostSide) throw new UsageError('--headnode: only accepted on the host; inside a headnode, jobs run on that headnode');
    return asked;
  }
  if (ctx.headnode === '') throw new UsageError('--headnode NAME is required when submitting from the host');
  return ctx.headnode;
}

function checkCombinations(o: OptionSet): void {
  if (o.cron !== undefined && o.beginAt !== undefined) throw new UsageError('--cron and -a both set a start time; give one of them');
  if (o.cron !== undefined && o.block === true) throw new UsageError('--cron cannot be combined with -W block=true: a recurring job never finishes');
}

function defaultName(form: JobForm): string {
  if (form.kind === 'script' && form.path === STDIN) return 'STDIN'; // PBS's name for a script read from stdin
  const base = posix.basename(form.kind === 'script' ? form.path : (form.argv[0] as string));
  return base.slice(0, MAX_JOB_NAME);
}

function buildSpec(o: OptionSet, form: JobForm, ctx: QsubContext, warnings: string[]): { spec: JobSpec; dirs: OutputTarget[] } {
  const res = resolveResources(o.resources);
  warnings.push(...res.warnings);
  const cwd = o.workdir === undefined ? ctx.cwd : posix.normalize(posix.resolve(ctx.cwd, o.workdir));
  const out = o.stdout === undefined ? {} : resolveOutput(o.stdout, '-o', ctx, warnings);
  const err = o.stderr === undefined ? {} : resolveOutput(o.stderr, '-e', ctx, warnings);
  const spec: JobSpec = {
    argv: form.kind === 'argv' ? form.argv : [],
    ...(form.kind === 'script' ? { script: withInterpreter(form.text, o.shell), scriptArgs: [...form.args, ...(o.scriptArgs ?? [])] } : {}),
    name: o.name ?? defaultName(form),
    cwd,
    env: o.exportAll ? { ...ctx.env, ...o.vars } : { ...o.vars },
    user: ctx.user,
    group: ctx.group,
    headnode: chooseHeadnode(o.headnode, ctx),
    queue: o.queue ?? ctx.defaultQueue,
    priority: o.priority ?? 0,
    ...(res.walltimeSec !== undefined ? { walltimeSec: res.walltimeSec } : {}),
    ...(out.path !== undefined ? { stdoutPath: out.path } : {}),
    ...(err.path !== undefined ? { stderrPath: err.path } : {}),
    join: o.join ?? 'n',
    rerunnable: o.rerunnable ?? true,
    resources: res.resources,
    submitHost: ctx.submitHost,
    ...(o.account !== undefined ? { accountName: o.account } : {}),
    ...(o.project !== undefined ? { project: o.project } : {}),
    ...(o.mailPoints !== undefined ? { mailPoints: o.mailPoints } : {}),
    ...(o.mailUsers !== undefined ? { mailUsers: o.mailUsers } : {}),
    ...(o.shell !== undefined ? { shell: o.shell } : {}),
    ...(o.groupList !== undefined ? { groupList: o.groupList } : {}),
    ...(o.umask !== undefined ? { umask: o.umask } : {}),
    ...(o.resources.extras !== undefined ? { extraResources: o.resources.extras } : {}),
  };
  if (o.groupList !== undefined && ctx.accountGroups === undefined) {
    warnings.push(`-W group_list=${o.groupList} recorded, not checked: the job runs with the headnode account's own groups`);
  }
  if (o.umask !== undefined) warnings.push(`-W umask=${o.umask} recorded: output files are written with the headnode account's default umask`);
  if (o.shell !== undefined && form.kind === 'argv') warnings.push(`-S ${o.shell} ignored: a command given after -- runs without a shell`);
  if (o.scriptArgs !== undefined && form.kind === 'argv') throw new UsageError('-F gives arguments to a script; a command takes its arguments after --');
  return { spec, dirs: [out, err] };
}

/**
 * -S: the script runs under that interpreter. run-job starts a script through its `#!` line,
 * so the line is replaced (or added before line 1): what PBS does by running `shell script`.
 */
function withInterpreter(text: string, shell: string | undefined): string {
  if (shell === undefined) return text;
  if (text.startsWith('#!')) {
    const nl = text.indexOf('\n');
    return `#!${shell}${nl < 0 ? '' : text.slice(nl)}`;
  }
  return `#!${shell}\n${text}`;
}

/** -W group_list: refused when the client sent the account's groups and the group is not one of them. */
function checkGroup(group: string, ctx: QsubContext): string {
  if (ctx.accountGroups !== undefined && !ctx.accountGroups.includes(group)) {
    throw new UsageError(`-W group_list=${group}: the submitting account is not in group ${group} (its groups: ${ctx.accountGroups.join(', ') || 'none'})`);
  }
  return group;
}

function buildJob(o: OptionSet, form: JobForm, ctx: QsubContext): QsubJob {
  checkCombinations(o);
  const warnings = [...o.warnings];
  const { spec, dirs } = buildSpec(o, form, ctx, warnings);
  const job: QsubJob = { kind: 'job', spec, block: o.block ?? false, hold: o.hold ?? false, quiet: o.quiet ?? false, warnings };
  if (o.beginAt !== undefined) job.beginAt = o.beginAt;
  if (o.array !== undefined) job.array = o.maxRunSubjobs !== undefined && o.array.max === undefined ? { ...o.array, max: o.maxRunSubjobs } : o.array;
  else if (o.maxRunSubjobs !== undefined) warnings.push(`-W max_run_subjobs=${o.maxRunSubjobs} ignored: the job is not an array (-J)`);
  if (o.depend !== undefined) job.depend = o.depend;
  if (o.cron !== undefined) job.cron = o.cron;
  if (o.resources.chunks !== undefined) job.chunks = o.resources.chunks;
  const [out, err] = dirs as [OutputTarget, OutputTarget];
  if (out.dir !== undefined || err.dir !== undefined) {
    job.outputDirs = { ...(out.dir !== undefined ? { stdout: out.dir } : {}), ...(err.dir !== undefined ? { stderr: err.dir } : {}) };
  }
  return job;
}

// ------------------------------------------------------------------ entry

/** The operand the client answers with its standard input (`gcqsub < job.sh`, `echo cmd | gcqsub`). */
export const STDIN = '-';

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
