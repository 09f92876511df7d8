import { CopperError, UsageError, errorMessage } from '../../errors.js';
import { exitCodeOf } from '../../api/error-map.js';
import { log } from '../../log.js';
import type { Tool, ToolRequest, ToolResult, ToolServices } from './tool.js';
import { gcqdel } from './gcqdel.js';
import { gcqstat } from './gcqstat.js';
import { gcqsub } from './gcqsub.js';
import { gcqalter } from './gcqalter.js';
import { gcqhold, gcqrls } from './holds.js';
import { gcqpeek } from './gcqpeek.js';
import { gcqexec } from './gcqexec.js';
import { gcqselect } from './gcqselect.js';
import { gctracejob } from './gctracejob.js';
import { gcseff } from './gcseff.js';
import { gcqmove, gcqrerun, gcqsig } from './running-cmds.js';
import { gcpbsnodes } from './gcpbsnodes.js';

const TOOLS: Record<string, Tool> = {
  gcqsub,
  gcqstat,
  gcqdel,
  gcqhold,
  gcqrls,
  gcqalter,
  gcqselect,
  gctracejob,
  gcseff,
  gcqsig,
  gcqrerun,
  gcqmove,
  gcqpeek,
  gcqexec,
  gcpbsnodes,
};

/** Run a tool for a client; every failure becomes one stderr line and a non-zero exit. */
export async function runTool(name: string, req: ToolRequest, s: ToolServices): Promise<ToolResult> {
  const tool = name === 'gc' ? s.gc : TOOLS[name];
  if (!tool) throw new UsageError(`unknown tool '${name}'`);
  try {
    return await tool(req, s);
  } catch (e) {
    if (!(e instanceof CopperError)) log.error('tool failed', { tool: name, error: errorMessage(e), stack: (e as Error).stack });
    const line = errorMessage(e).split('\n')[0];
    return { stdout: '', stderr: `${name}: ${line}\n`, exitCode: exitCodeOf(e) };
  }
}
