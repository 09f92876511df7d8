import { errorMessage } from '../../errors.js';
import { exitCodeOf } from '../../api/error-map.js';
import type { ToolResult } from './tool.js';

/**
 * Run `op` for each job id in turn; one stderr line per failure and the status of the last
 * failure (PBS's habit), so one bad id does not stop the others.
 */
export async function forEachJobId(tool: string, ids: string[], op: (id: string) => Promise<void>): Promise<ToolResult> {
  let stderr = '';
  let exitCode = 0;
  for (const id of ids) {
    try {
      await op(id);
    } catch (e) {
      stderr += `${tool}: ${errorMessage(e)}\n`;
      exitCode = exitCodeOf(e);
    }
  }
  return { stdout: '', stderr, exitCode };
}
