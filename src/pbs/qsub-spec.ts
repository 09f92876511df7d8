/**
 * Building the job from the merged options: output paths, the working directory, the
 * headnode, the JobSpec itself and the parts of the answer that sit beside it.
 */
import { posix } from 'node:path';
import { UsageError } from '../errors.js';
import type { JobSpec } from '../queue/job.js';
import { MAX_JOB_NAME } from './option-values.js';
import { resolveResources } from './resources.js';
import { STDIN, type OptionSet, type QsubContext, type QsubJob } from './qsub-types.js';

export type JobForm = { kind: 'argv'; argv: string[] } | { kind: 'script'; path: string; text: string; args: string[] };

interface OutputTarget {
  path?: string;
  dir?: string;
}

/** -o/-e: `[host:]path`, relative to cwd; a trailing "/" or an existing directory means a directory. */
function resolveOutput(value: string, option: string, ctx: QsubContext, warnings: string[]): OutputTarget {
  let p = value;
  const host = /^([A-Za-z0-9][A-Za-z0-9.-]*):(.*)$/s.exec(value);
  if (host) {
    p = host[2];
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
  if (o.interactive) {
    if (o.array !== undefined) throw new UsageError('-I cannot be used with an array job (-J/-t): an interactive job is one shell on one terminal');
    if (o.block === true) throw new UsageError('-I cannot be combined with -W block=true: gcqsub -I already waits for the job to end');
    if (o.cron !== undefined) throw new UsageError('-I cannot be combined with --cron: nobody is at the terminal when a recurring job starts');
  }
}

function defaultName(form: JobForm): string {
  if (form.kind === 'script' && form.path === STDIN) return 'STDIN'; // PBS's name for a script read from stdin
  if (form.kind === 'argv' && form.argv.length === 0) return 'STDIN'; // PBS's name for gcqsub -I alone
  const base = posix.basename(form.kind === 'script' ? form.path : form.argv[0]);
  return base.slice(0, MAX_JOB_NAME);
}

function buildSpec(o: OptionSet, form: JobForm, ctx: QsubContext, warnings: string[]): { spec: JobSpec; dirs: OutputTarget[] } {
  const res = resolveResources(o.resources);
  warnings.push(...res.warnings);
  const cwd = o.workdir === undefined ? ctx.cwd : posix.normalize(posix.resolve(ctx.cwd, o.workdir));
  const out = o.stdout === undefined ? {} : resolveOutput(o.stdout, '-o', ctx, warnings);
  const err = o.stderr === undefined ? {} : resolveOutput(o.stderr, '-e', ctx, warnings);
  // -I with a script: as PBS, its directives count and its commands do not (the shell is the job).
  const runsScript = form.kind === 'script' && o.interactive !== true;
  if (form.kind === 'script' && !runsScript) {
    warnings.push(
      `-I: the commands of ${form.path === STDIN ? 'the script' : form.path} are not run (its #PBS directives apply); type them in the interactive shell`,
    );
  }
  const spec: JobSpec = {
    argv: form.kind === 'argv' ? form.argv : [],
    ...(form.kind === 'script' && runsScript ? { script: withInterpreter(form.text, o.shell), scriptArgs: [...form.args, ...(o.scriptArgs ?? [])] } : {}),
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
    ...(o.stageout !== undefined ? { stageout: o.stageout === 'none' ? 'none' : o.stageout.map((p) => posix.resolve(ctx.cwd, p)) } : {}),
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
  if (o.shell !== undefined && o.interactive === true) warnings.push(`-S ${o.shell} ignored: the interactive shell is the account's login shell`);
  else if (o.shell !== undefined && form.kind === 'argv') warnings.push(`-S ${o.shell} ignored: a command given after -- runs without a shell`);
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
export function buildJob(o: OptionSet, form: JobForm, ctx: QsubContext): QsubJob {
  checkCombinations(o);
  const warnings = [...o.warnings];
  const { spec, dirs } = buildSpec(o, form, ctx, warnings);
  const interactive = o.interactive === true;
  const job: QsubJob = { kind: 'job', spec, block: o.block ?? false, hold: o.hold ?? false, quiet: o.quiet ?? false, warnings, interactive };
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
