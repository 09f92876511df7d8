/**
 * What the parsed options of one source (the command line, or a script's #PBS lines) ask
 * for: each option's value checked and turned into an `OptionSet`; sets merge with the
 * command line winning.
 */
import { UsageError } from '../errors.js';
import { directiveError, extractDirectives, splitDirectiveWords } from './directives.js';
import type { Directive } from './directives.js';
import {
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
import { mergeResources, parseResourceList } from './resources.js';
import { parseArrayList, parseArrayRange, parsePbsDateTime } from './units.js';
import { parseTokens, scanArgv, type RawOptions } from './qsub-argv.js';
import type { OptionSet, QsubContext, Source } from './qsub-types.js';

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
  n: "-n ignored: a clone VM is always the job's alone",
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
  D: "the job sees the headnode's file system as it was at submission",
  K: 'gcqdel sends TERM, then KILL after a few seconds',
  T: 'Copper runs no prologue or epilogue scripts',
  L: 'NUMA requests have no meaning in one clone VM; use -l ncpus and mem',
};

function interpretIgnored(raw: RawOptions, set: OptionSet): void {
  for (const [flag, why] of Object.entries(IGNORED_FLAGS)) {
    if (!raw.flags.has(flag)) continue;
    // -I -X: the interactive job runs, without a display (a clone has no X11 channel home).
    set.warnings.push(
      flag === 'X' && raw.flags.has('I')
        ? '-X ignored: no X11 forwarding into a clone; the interactive shell has no display (run graphical programs in your headnode)'
        : why,
    );
  }
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
    if (attrs.stageout !== undefined) set.stageout = mergeStageout(set.stageout, attrs.stageout);
    if (attrs.groupList !== undefined) set.groupList = checkGroup(attrs.groupList, ctx);
    if (attrs.umask !== undefined) set.umask = attrs.umask;
    if (attrs.maxRunSubjobs !== undefined) set.maxRunSubjobs = attrs.maxRunSubjobs;
    set.warnings.push(...(attrs.warnings ?? []));
  }
}

/** Repeated -W stageout lists add up; none wins. */
function mergeStageout(a: 'none' | string[] | undefined, b: 'none' | string[]): 'none' | string[] {
  if (a === 'none' || b === 'none') return 'none';
  return [...(a ?? []), ...b.filter((p) => !(a ?? []).includes(p))];
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

export function interpret(raw: RawOptions, ctx: QsubContext, source: Source): OptionSet {
  if (raw.flags.has('G'))
    throw new UsageError('-G: interactive GUI jobs are not supported; use gcqsub -I for a shell, and run graphical programs in your headnode');
  if (raw.values.has('attach')) throw new UsageError('--attach goes alone: gcqsub -I --attach job_identifier');
  const set: OptionSet = { resources: {}, vars: {}, warnings: [] };
  if (raw.flags.has('I')) set.interactive = true;
  interpretSimple(raw, set, source);
  interpretLists(raw, set, ctx);
  interpretTiming(raw, set, ctx);
  return set;
}

/** `over` wins key by key; resources and -v variables merge per entry, warnings add up. */
export function mergeSets(base: OptionSet, over: OptionSet): OptionSet {
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
      throw new UsageError(`unexpected argument "${scanned.dashDash ? '--' : scanned.operands[0]}"`);
    }
    if (scanned.help) throw new UsageError('unknown option --help');
    return interpret(parseTokens(scanned.tokens), ctx, 'directive');
  } catch (err) {
    if (err instanceof UsageError) throw directiveError(fileName, d, err.message);
    throw err;
  }
}

/** The script's directive options merged in file order (a later line overrides an earlier one). */
export function scriptOptions(path: string, text: string, prefix: string, ctx: QsubContext): OptionSet {
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

/** -W group_list: refused when the client sent the account's groups and the group is not one of them. */
function checkGroup(group: string, ctx: QsubContext): string {
  if (ctx.accountGroups !== undefined && !ctx.accountGroups.includes(group)) {
    throw new UsageError(`-W group_list=${group}: the submitting account is not in group ${group} (its groups: ${ctx.accountGroups.join(', ') || 'none'})`);
  }
  return group;
}
