/**
 * `gc clone|clones|kill|whoami`, run by gcd for a thin client over POST /v1/cli (the gc tool,
 * copper.py). They parse argv and call clusters/calls.ts, the same calls the typed routes
 * (/v1/clusters/..., CopperClient) make, with the same identity rules: inside a VM they act on
 * that VM's own cluster, known from the channel; on the host the administrator names the
 * headnode (--headnode NAME or GC_HEADNODE) and acts as that headnode.
 *
 *   gc clone N [--ttl DURATION] [--json]        fork the caller into N clones
 *   gc clones [--json] [--all] [--usage]        the cluster's clones; --all: every cluster (admin);
 *                                               --usage: live clones per user and the limits
 *   gc kill ID... | --generation G | --all      destroy clones
 *   gc whoami [--json]                          this VM in its cluster (KEY=VALUE, as clone.env)
 */
import { UsageError } from '../../errors.js';
import { parseWalltime } from '../../pbs/units.js';
import type { ClusterCalls } from '../../clusters/calls.js';
import type { CloneInfo, CloneUsageRow, KillSelector, WhoAmI } from '../../clusters/types.js';
import type { Tool, ToolRequest, ToolResult } from './tool.js';
import { parseArgs } from './args.js';

export const CLUSTER_COMMANDS: ReadonlySet<string> = new Set(['clone', 'clones', 'kill', 'whoami']);

interface Common {
  json?: boolean;
  headnode?: string;
  _: Array<string | number>;
}

const ok = (stdout: string, stderr = ''): ToolResult => ({ stdout, stderr, exitCode: 0 });

/** `90`, `90s`, `15m`, `2h`, `1d`, or `[[HH:]MM:]SS`. */
export function parseTtl(text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text);
  if (m) {
    const n = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as 's' | 'm' | 'h' | 'd'];
    if (n <= 0) throw new UsageError(`--ttl ${text}: must be more than 0 seconds`);
    return n;
  }
  try {
    return parseWalltime(text, '--ttl');
  } catch {
    throw new UsageError(`--ttl ${text}: not a duration; use seconds (90), 90s, 15m, 2h, 1d or HH:MM:SS`);
  }
}

/** The headnode the command names: --headnode, or on the host GC_HEADNODE from the caller's environment. */
function named(req: ToolRequest, flag: string | undefined): string | undefined {
  return req.actor.kind === 'guest' ? flag : (flag ?? req.env.GC_HEADNODE);
}

function table(head: string[], rows: string[][]): string {
  const all = [head, ...rows];
  const w = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export function formatDuration(sec: number): string {
  const s = Math.max(0, Math.round(sec));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor((s % 86_400) / 3600)).padStart(2, '0')}h`;
}

function ttlLeft(c: CloneInfo, now: number): string {
  return c.expiresAt === undefined ? '-' : formatDuration((c.expiresAt - now) / 1000);
}

export function formatClones(clones: CloneInfo[], opts: { headnodeColumn?: boolean; now?: number } = {}): string {
  const now = opts.now ?? Date.now();
  const head = ['ID', 'NAME', 'GEN', 'PARENT', 'STATE', 'ADDRESS', 'UPTIME', 'MEM', 'TTL'];
  if (opts.headnodeColumn) head.unshift('HEADNODE');
  const rows = clones.map((c) => {
    const r = [
      String(c.id), c.name, String(c.generation), c.parent, c.state, c.address, formatDuration(c.uptimeSec),
      c.pssMiB !== undefined ? `${Math.round(c.pssMiB)}M` : '-', ttlLeft(c, now),
    ];
    if (opts.headnodeColumn) r.unshift(c.headnode);
    return r;
  });
  return table(head, rows);
}

function formatNew(clones: CloneInfo[]): string {
  const now = Date.now();
  return table(['ID', 'NAME', 'GEN', 'ADDRESS', 'TTL'], clones.map((c) => [String(c.id), c.name, String(c.generation), c.address, ttlLeft(c, now)]));
}

function formatUsage(rows: CloneUsageRow[]): string {
  return table(['USER', 'GROUP', 'CLONES', 'LIMIT'], rows.map((r) => [r.user, r.group || '-', String(r.clones), r.limit === undefined ? '-' : String(r.limit)]));
}

export function formatWhoami(w: WhoAmI): string {
  const lines = [
    `COPPER_CLONE=${w.kind === 'clone' ? 1 : 0}`,
    `COPPER_CLONE_ID=${w.id}`,
    `COPPER_GENERATION=${w.generation}`,
    `COPPER_PARENT=${w.parent ?? ''}`,
    `COPPER_HEADNODE=${w.headnode}`,
    `COPPER_CLUSTER_IP=${w.address ?? ''}`,
    `COPPER_CLUSTER_NAME=${w.name}`,
  ];
  return lines.join('\n') + '\n';
}

const headnodeOf = (hn: string | undefined): { headnode?: string } => (hn !== undefined ? { headnode: hn } : {});

/** A whole number from argv (yargs gives numbers for numeric words). */
function wholeNumber(v: string | number | undefined, what: string): number {
  const n = typeof v === 'number' ? v : v !== undefined && /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`${what}: '${String(v ?? '')}' is not a whole number`);
  return n;
}

export function clusterTool(calls: ClusterCalls): Tool {
  return async (req) => {
    const [cmd, ...rest] = req.argv;
    switch (cmd) {
      case 'clone': {
        const p = await parseArgs<Common & { ttl?: string }>('gc clone', rest, (y) =>
          y
            .usage('gc clone N [--ttl DURATION] [--json]: fork this VM into N running clones')
            .option('ttl', { type: 'string', describe: 'destroy the clones after this long (90, 15m, 2h, 1d, HH:MM:SS)' })
            .option('json', { type: 'boolean', describe: 'print the new clones as JSON' })
            .option('headnode', { type: 'string', describe: 'on the host: the headnode to fork' }),
        );
        if (p.kind === 'help') return ok(p.help + '\n');
        const a = p.args;
        if (a._.length !== 1) throw new UsageError('gc clone N: give one number N (how many clones)');
        const n = wholeNumber(a._[0], 'gc clone N');
        const ttlSec = a.ttl !== undefined ? parseTtl(a.ttl) : undefined;
        const made = await calls.clone(req.actor, { n, ...(ttlSec !== undefined ? { ttlSec } : {}), ...headnodeOf(named(req, a.headnode)) });
        return ok(a.json ? JSON.stringify(made) + '\n' : formatNew(made));
      }
      case 'clones': {
        const p = await parseArgs<Common & { all?: boolean; usage?: boolean }>('gc clones', rest, (y) =>
          y
            .usage('gc clones [--json] [--all] [--usage]: the clones of this VM\'s cluster')
            .option('json', { type: 'boolean', describe: 'JSON' })
            .option('all', { type: 'boolean', describe: 'on the host: every cluster' })
            .option('usage', { type: 'boolean', describe: 'live clones per user, with the limits' })
            .option('headnode', { type: 'string', describe: 'on the host: whose cluster' }),
        );
        if (p.kind === 'help') return ok(p.help + '\n');
        const a = p.args;
        if (a._.length) throw new UsageError(`gc clones: unexpected argument '${String(a._[0])}'`);
        if (a.usage) {
          const rows = calls.usage(req.actor);
          return ok(a.json ? JSON.stringify(rows) + '\n' : formatUsage(rows));
        }
        if (a.all) {
          const all = await calls.list(req.actor, { all: true });
          return ok(a.json ? JSON.stringify(all) + '\n' : formatClones(all, { headnodeColumn: true }));
        }
        const list = await calls.list(req.actor, headnodeOf(named(req, a.headnode)));
        return ok(a.json ? JSON.stringify(list) + '\n' : formatClones(list));
      }
      case 'kill': {
        const p = await parseArgs<Common & { generation?: number; all?: boolean }>('gc kill', rest, (y) =>
          y
            .usage('gc kill ID... | --generation G | --all: destroy clones of this cluster')
            .option('generation', { type: 'number', describe: 'every clone of this generation' })
            .option('all', { type: 'boolean', describe: 'every clone' })
            .option('json', { type: 'boolean', describe: 'print the killed clones as JSON' })
            .option('headnode', { type: 'string', describe: 'on the host: whose cluster' }),
        );
        if (p.kind === 'help') return ok(p.help + '\n');
        const a = p.args;
        const forms = [a._.length > 0, a.generation !== undefined, a.all === true].filter(Boolean).length;
        if (forms !== 1) throw new UsageError('gc kill: give clone ids, or --generation G, or --all (one of them)');
        let sel: KillSelector;
        if (a.all) sel = { all: true };
        else if (a.generation !== undefined) sel = { generation: wholeNumber(a.generation, 'gc kill --generation') };
        else sel = { ids: a._.map((v) => wholeNumber(v, 'gc kill')) };
        const killed = await calls.kill(req.actor, sel, named(req, a.headnode));
        if (a.json) return ok(JSON.stringify(killed) + '\n');
        if (killed.length === 0) return ok('', 'gc kill: no such clone: nothing killed\n');
        return ok(killed.map((c) => `killed ${c.id} ${c.name}\n`).join(''));
      }
      case 'whoami': {
        const p = await parseArgs<Common>('gc whoami', rest, (y) =>
          y.usage('gc whoami [--json]: this VM in its cluster').option('json', { type: 'boolean' }).option('headnode', { type: 'string' }),
        );
        if (p.kind === 'help') return ok(p.help + '\n');
        const w = calls.whoami(req.actor, named(req, p.args.headnode));
        return ok(p.args.json ? JSON.stringify(w) + '\n' : formatWhoami(w));
      }
      default:
        throw new UsageError(`gc: unknown cluster command '${cmd ?? ''}' (clone, clones, kill, whoami)`);
    }
  };
}
