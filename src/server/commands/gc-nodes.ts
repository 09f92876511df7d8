import { PermissionError, UsageError } from '../../errors.js';
import type { AdminState, NodeRecord, NodeRegistry } from '../../grid/registry.js';
import { parseArgs } from './args.js';
import { ok, type ToolRequest, type ToolResult } from './tool.js';

/** The `gc` words this file answers. */
export const NODE_COMMANDS: ReadonlySet<string> = new Set(['nodes', 'node']);

/** pbsnodes' words for a host's state: free, job-busy (every core taken), offline, down. */
function pbsState(n: NodeRecord): string {
  if (n.state === 'down') return 'down';
  if (n.state === 'offline') return 'offline';
  if (n.state === 'draining') return 'offline,draining';
  return n.ncpus > 0 && n.usedNcpus >= n.ncpus ? 'job-busy' : 'free';
}

function mem(mib: number): string {
  return mib % 1024 === 0 && mib > 0 ? `${mib / 1024}gb` : `${mib}mb`;
}

function table(nodes: readonly NodeRecord[]): string {
  const head = ['NAME', 'STATE', 'JOBS', 'NCPUS', 'MEM', 'CACHE', 'COMMENT'];
  const body = nodes.map((n) => [
    n.name,
    n.state,
    String(n.jobs.length),
    `${n.usedNcpus}/${n.ncpus}`,
    `${mem(n.usedMemMiB)}/${mem(n.memMiB)}`,
    String(n.cachedSnapshots.length),
    n.comment,
  ]);
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return (
    all
      .map((r) =>
        r
          .map((c, i) => c.padEnd(w[i]))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** `pbsnodes -a`'s long form: the name, then indented `key = value` lines. */
function long(nodes: readonly NodeRecord[]): string {
  return nodes
    .map((n) => {
      const lines = [
        n.name,
        `     state = ${pbsState(n)}`,
        `     role = ${n.role}`,
        `     resources_available.ncpus = ${n.ncpus}`,
        `     resources_assigned.ncpus = ${n.usedNcpus}`,
        `     resources_available.mem = ${n.memMiB * 1024}kb`,
        `     resources_assigned.mem = ${n.usedMemMiB * 1024}kb`,
        `     resources_available.tmpfs = ${n.tmpfsMiB * 1024}kb`,
        `     accel = ${n.accel}`,
        `     version = ${n.version}`,
        `     jobs = ${n.jobs.join(', ')}`,
        `     snapshot_cache = ${n.cachedSnapshots.join(', ')}`,
        `     last_state_change_time = ${new Date(n.downAt ?? n.startedAt).toUTCString()}`,
        `     last_heartbeat = ${new Date(n.heartbeatAt).toUTCString()}`,
      ];
      if (n.comment) lines.push(`     comment = ${n.comment}`);
      return lines.join('\n') + '\n';
    })
    .join('\n');
}

const VERBS: Record<string, AdminState> = { offline: 'offline', online: 'up', drain: 'draining' };

/**
 * `gc nodes [-a] [--json]`: the grid's compute hosts (any caller, as pbsnodes). `gc node
 * offline|online|drain NAME [-C comment]` (admin only): offline and drain take no new jobs and
 * let running ones finish; a draining host turns offline by itself once it runs nothing.
 * `gc node delete NAME` forgets a host that is down for good.
 */
export async function gcNodesTool(req: ToolRequest, registry: NodeRegistry): Promise<ToolResult> {
  const [group, ...rest] = req.argv;
  if (group === 'nodes') {
    const p = await parseArgs<{ a?: boolean; json?: boolean }>('gc nodes', rest, (y) =>
      y
        .usage('gc nodes [-a] [--json]: the compute hosts, their state, jobs and use')
        .option('a', { type: 'boolean', describe: 'every attribute, as pbsnodes -a' })
        .option('json', { type: 'boolean', describe: 'the records as JSON' }),
    );
    if (p.kind === 'help') return ok(p.help + '\n');
    if (p.args._.length) throw new UsageError(`gc nodes takes no names (got ${p.args._.join(' ')})`);
    const nodes = await registry.list();
    if (p.args.json)
      return ok(
        JSON.stringify(
          nodes.map(({ controlUrl: _c, ...n }) => n),
          null,
          1,
        ) + '\n',
      );
    if (nodes.length === 0) return ok('', 'gc nodes: no compute host has registered\n');
    return ok(p.args.a ? long(nodes) : table(nodes));
  }
  const p = await parseArgs<{ C?: string }>('gc node', rest, (y) =>
    y.usage('gc node offline|online|drain NAME [-C comment] | gc node delete NAME').option('C', { type: 'string', describe: 'the comment gc nodes shows' }),
  );
  if (p.kind === 'help') return ok(p.help + '\n');
  const [verb, name, ...extra] = p.args._.map(String);
  if (!verb || !name || extra.length) throw new UsageError('usage: gc node offline|online|drain NAME [-C comment] | gc node delete NAME');
  if (req.actor.kind !== 'admin') throw new PermissionError(`gc node ${verb}: only the administrator (on the host) may change a node`);
  if (verb === 'delete') {
    await registry.forget(name);
    return ok(`${name} forgotten\n`);
  }
  const to = VERBS[verb];
  if (!to) throw new UsageError(`gc node: unknown action '${verb}' (offline, online, drain or delete)`);
  // online without -C clears the comment, as pbsnodes -r does; offline/drain without -C keep it.
  const comment = p.args.C ?? (to === 'up' ? '' : undefined);
  const rec = await registry.setAdminState(name, to, comment);
  return ok(`${rec.name}: ${rec.state}${rec.state === 'down' ? ` (will be ${to} when it is back)` : ''}${rec.comment ? ` (${rec.comment})` : ''}\n`);
}
