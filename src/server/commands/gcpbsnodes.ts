/**
 * `pbsnodes` (gcpbsnodes): PBS's node listing, for tools that call it. Toil's Torque/PBS batch
 * system runs `pbsnodes --version` when it starts and picks PBS Pro's commands (`qstat -x`,
 * `-l select=...`) when the answer contains "PBSPro", Torque's otherwise; without a pbsnodes it
 * cannot start. Copper answers as PBS Pro, whose commands it follows. Anything else is
 * `gc nodes` (`-a` its long form).
 */
import { UsageError } from '../../errors.js';
import { ok, type Tool } from './tool.js';

/** PBS Pro's `pbsnodes --version` line, in the form Toil recognises. */
export const PBSNODES_VERSION = 'pbs_version = PBSPro_copper';

export const gcpbsnodes: Tool = async (req, s) => {
  if (req.argv.length === 1 && req.argv[0] === '--version') return ok(PBSNODES_VERSION + '\n');
  if (!s.gc) throw new UsageError('this gcd lists no nodes; only --version');
  return s.gc({ ...req, argv: ['nodes', ...req.argv] }, s);
};
