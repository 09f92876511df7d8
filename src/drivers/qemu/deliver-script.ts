/** The headnode side of output delivery (guest/deliver.py), read from this checkout once. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DriverError } from '../../errors.js';

/** A root-only folder in the headnode where the host leaves output before deliver.py takes it. */
export const DELIVER_STAGE_DIR = '/var/lib/copper/deliver';

let script: string | undefined;

export function deliverScript(): string {
  if (script !== undefined) return script;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const f = join(dir, 'src', 'drivers', 'qemu', 'guest', 'deliver.py');
    if (existsSync(f)) return (script = readFileSync(f, 'utf8'));
    dir = dirname(dir);
  }
  throw new DriverError('cannot find the delivery guest script (src/drivers/qemu/guest/deliver.py)');
}
