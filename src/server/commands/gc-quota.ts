/**
 * `gc quota [USER]`: a user's byte quotas from quotas.yaml and what they use now. Today the
 * headnode disks (headnode_disk_bytes: the virtual sizes of the user's headnode disks, as
 * `gc headnode create` counts them). The administrator sees every owner (or USER); inside a
 * headnode, its owner only.
 */
import { formatLimit, type QuotaConfig } from '../../config/quotas.js';
import { PermissionError } from '../../errors.js';
import { ownerDiskUse } from '../../headnodes/disk-quota.js';
import type { HeadnodeInfo } from '../../headnodes/types.js';
import { sizeText, userBytes } from '../../scheduler/byte-quotas.js';
import type { ToolRequest, ToolResult } from './tool.js';

const MiB = 1024 * 1024;

/** One row per user: USER QUOTA USED LIMIT (`-` for no limit). */
export function quotaTable(cfg: QuotaConfig, headnodes: readonly HeadnodeInfo[], users: readonly string[]): string {
  const rows = [['USER', 'QUOTA', 'USED', 'LIMIT']];
  for (const user of users) {
    const use = ownerDiskUse(headnodes, user);
    const limit = userBytes(cfg, user, 'headnodeDiskMiB');
    const used = use.bytes === 0 ? '0' : sizeText(use.bytes);
    rows.push([
      user,
      'headnode_disk_bytes',
      `${used} (${use.count} headnode${use.count === 1 ? '' : 's'})`,
      limit === undefined ? '-' : formatLimit('size', limit / MiB),
    ]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => c.padEnd(w[i]))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

export async function quotaCommand(req: ToolRequest, cfg: QuotaConfig, list: () => Promise<HeadnodeInfo[]>, args: string[]): Promise<ToolResult> {
  const all = await list();
  const guest = req.actor.kind === 'guest' ? req.actor.identity : undefined;
  let users: string[];
  if (guest) {
    if (args[0] !== undefined && args[0] !== guest.owner) throw new PermissionError(`gc quota: only your own quotas (${guest.owner})`);
    users = [guest.owner];
  } else users = args[0] !== undefined ? [args[0]] : [...new Set(all.map((h) => h.owner))].sort();
  return { stdout: quotaTable(cfg, all, users), stderr: '', exitCode: 0 };
}
