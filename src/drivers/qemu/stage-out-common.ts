/** What both halves of a stage-out share (stage-out-clone.ts packs, stage-out-headnode.ts places). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DriverError } from '../../errors.js';

export class StageOutError extends DriverError {}

/** A job's account in the headnode: checked before it is handed to a guest script. */
export const ACCOUNT = /^[a-z_][a-z0-9_-]{0,31}$/;

/** The tar adds 512 bytes a member and padding: an archive's bound leaves room for that, no more. */
export function archiveBound(capBytes: number): number {
  return capBytes + Math.max(64 * 1024 * 1024, Math.ceil(capBytes / 4));
}

let scripts: { pack: string; place: string } | undefined;

/** The guest scripts, read from src/stageout/guest of this checkout (sent with each run). */
export function stageOutScripts(): { pack: string; place: string } {
  if (scripts) return scripts;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const g = join(dir, 'src', 'stageout', 'guest');
    if (existsSync(join(g, 'pack.sh'))) {
      scripts = { pack: readFileSync(join(g, 'pack.sh'), 'utf8'), place: readFileSync(join(g, 'place.py'), 'utf8') };
      return scripts;
    }
    dir = dirname(dir);
  }
  throw new StageOutError('cannot find the stage-out guest scripts (src/stageout/guest)');
}

/** Guest text fit for a comment: one printable line, bounded. */
export function oneLine(s: string, max = 300): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what goes
  const t = s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}…` : t;
}
