import type { ExecSpec } from '../drivers/driver.js';
import type { InteractiveTerminal } from '../queue/job.js';

/**
 * What makes a job's run interactive (-I): its command goes on a pseudo-terminal of the
 * submitter's size, with the submitter's $TERM; everything else runs as for any job.
 */
export function interactiveExec(t: InteractiveTerminal, env: Record<string, string>): Pick<ExecSpec, 'terminal' | 'env'> {
  return { terminal: { rows: t.rows, cols: t.cols }, env: { ...env, TERM: t.term } };
}
