/**
 * Stage-out under the user's byte quotas (issue 13 item 9): `stageout_bytes` lowers the
 * per-job cap of what comes home (the rest is the excess kept on the host), and the excess
 * kept on the host counts toward `undelivered_bytes`: over it, it is dropped with the reason.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { QuotaConfig } from '../config/quotas.js';
import { OWNER_FILE, treeBytes, undeliveredRoom, userBytes } from '../scheduler/byte-quotas.js';
import type { StageOutRequest, StageOutResult } from './types.js';

/** The request's caps lowered to the user's stage-out quota. */
export function capStageOut(req: StageOutRequest, quotas: QuotaConfig, user: string): void {
  const cap = userBytes(quotas, user, 'stageoutMiB');
  if (cap !== undefined && cap < req.capBytes) req.capBytes = cap;
}

/** After a stage-out: the excess kept on the host is the user's; over undelivered_bytes it goes. */
export async function keptOverQuota(r: StageOutResult, req: StageOutRequest, quotas: QuotaConfig, user: string, spoolDir: string): Promise<string | undefined> {
  if (!r.excess?.keptAt) return undefined;
  await writeFile(join(req.keepDir, OWNER_FILE), `${user}\n`).catch(() => undefined);
  const undelivered = join(spoolDir, '..', 'undelivered');
  const adding = await treeBytes(req.keepDir);
  const over = await undeliveredRoom(quotas, user, undelivered, adding, async () => undefined, req.jobId);
  if (!over) return undefined;
  await rm(r.excess.keptAt, { force: true });
  delete r.excess.keptAt;
  return `the stage-out excess was dropped: ${over.message}`;
}
