import { hostname } from 'node:os';
import { UsageError } from '../../errors.js';
import { parseQsub } from '../../pbs/qsub-options.js';
import type { Tool } from './tool.js';
import { attachInteractive, interactiveRound, parseAttach, parseCursor, startInteractive } from './interactive.js';

/** PBS's qsub exit status for -W block=true: the job's own status, as a shell sees it. */
function blockExit(exitStatus: number | undefined): number {
  if (exitStatus === undefined) return 1;
  if (exitStatus < 0) return 1;
  return exitStatus > 255 ? exitStatus - 256 + 128 : exitStatus;
}

/**
 * gcqsub: parse as PBS qsub does, snapshot the caller's headnode now, queue the job, print
 * its id (and nothing else) on stdout. In a guest, user and headnode come from the channel.
 */
export const gcqsub: Tool = async (req, s) => {
  // gcqsub -I: the rounds of an interactive job's client, and --attach to one (interactive.ts).
  const cur = parseCursor(req.cursor);
  if (cur) return interactiveRound(req, s, cur);
  const attach = parseAttach(req.argv);
  if (attach !== undefined) return attachInteractive(req, s, attach);
  const guest = req.actor.kind === 'guest' ? req.actor.identity : undefined;
  const r = parseQsub(req.argv, {
    cwd: req.cwd,
    env: req.env,
    user: guest?.owner ?? 'root',
    group: guest?.group ?? 'root',
    headnode: guest?.headnode ?? req.env.GC_HEADNODE ?? '',
    submitHost: guest ? guest.vmId : hostname(),
    now: Date.now(),
    defaultQueue: '', // the admin's default_queue applies (resolved with the quotas)
    readFile: (p) => req.files[p],
    isMissing: (p) => req.missing.includes(p),
    hostSide: !guest,
    customResources: s.scheduler.quotaConfig().resources,
    ...(guest && req.groups ? { accountGroups: req.groups } : {}),
  });
  if (r.kind === 'needFile') return { stdout: '', stderr: '', exitCode: 0, needFile: r.needFile };
  if (r.kind === 'help') return { stdout: r.help, stderr: '', exitCode: 0 };
  const spec = { ...r.spec, account: req.account };
  if (r.interactive) {
    if (!req.terminal) throw new UsageError('-I needs a terminal: run gcqsub -I from an interactive shell (its stdin and stdout a terminal)');
    const term = req.env.TERM && /^[A-Za-z0-9._+-]{1,64}$/.test(req.env.TERM) ? req.env.TERM : 'xterm';
    spec.interactive = { rows: req.terminal.rows, cols: req.terminal.cols, term };
  }
  if (guest) {
    // Identity by construction: whatever the request said, the channel decides.
    Object.assign(spec, { user: guest.owner, group: guest.group, headnode: guest.headnode });
  } else {
    if (!spec.headnode) throw new UsageError('on the host, name the headnode: gcqsub --headnode NAME ... (or set GC_HEADNODE)');
    const hn = await s.headnodes.get(spec.headnode);
    Object.assign(spec, { user: hn.owner, group: hn.group });
  }
  if (r.outputDirs?.stdout) spec.stdoutPath = r.outputDirs.stdout.replace(/\/?$/, '/');
  if (r.outputDirs?.stderr) spec.stderrPath = r.outputDirs.stderr.replace(/\/?$/, '/');
  if (r.cron) {
    if (r.array || r.depend?.length || r.hold) throw new UsageError('--cron goes with neither -J/-t, -W depend nor -h');
    const c = await s.scheduler.recurring.create(r.cron, spec);
    return { stdout: r.quiet ? '' : `${c.id}\n`, stderr: r.warnings.map((w) => `gcqsub: warning: ${w}\n`).join(''), exitCode: 0 };
  }
  if (r.array && r.block) throw new UsageError('-W block=true cannot wait for an array job');
  const depend = r.depend?.map((d) => ({ type: d.type, jobIds: d.jobIds.map((id) => s.scheduler.store.parseId(id)) }));
  const [job] = await s.scheduler.submit([spec], {
    hold: r.hold,
    ...(r.beginAt !== undefined ? { beginAt: r.beginAt } : {}),
    ...(depend?.length ? { depend } : {}),
    ...(r.array ? { array: r.array } : {}),
  });
  const warn = r.warnings.map((w) => `gcqsub: warning: ${w}\n`).join('');
  if (r.interactive) return startInteractive(job, warn);
  if (!r.block) return { stdout: r.quiet ? '' : `${job.id}\n`, stderr: warn, exitCode: 0 };
  const done = await s.scheduler.waitFor(job.id);
  return { stdout: r.quiet ? '' : `${job.id}\n`, stderr: warn, exitCode: blockExit(done.exitStatus) };
};
