/**
 * `gc install-pbs-names [--prefix DIR] [--remove]`: small wrappers named qsub, qstat, qdel,
 * qselect, qhold, qrls, qalter, qsig, qrerun and qmove that run Copper's gcq* tools, for workflow managers and
 * portals that call the PBS names (Snakemake, Nextflow, dask-jobqueue, Open OnDemand).
 * Optional: nothing is installed unless asked. A file of that name that is not one of ours
 * is never overwritten.
 */
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { UsageError } from '../errors.js';

/** PBS name -> Copper tool. */
export const PBS_NAMES: Readonly<Record<string, string>> = {
  qsub: 'gcqsub',
  qstat: 'gcqstat',
  qdel: 'gcqdel',
  qselect: 'gcqselect',
  qhold: 'gcqhold',
  qrls: 'gcqrls',
  qalter: 'gcqalter',
  qsig: 'gcqsig',
  qrerun: 'gcqrerun',
  qmove: 'gcqmove',
  pbsnodes: 'gcpbsnodes',
};

const MARK = '// copper: PBS name wrapper (gc install-pbs-names)';

/** The wrapper's text: the thin client, told the name it was called by. */
export function wrapperText(pbsName: string, clientModule: string): string {
  const tool = PBS_NAMES[pbsName];
  if (tool === undefined) throw new UsageError(`${pbsName}: not a PBS name Copper provides`);
  return [
    '#!/usr/bin/env node',
    MARK,
    `import { main } from ${JSON.stringify(pathToFileURL(clientModule).href)};`,
    `process.exitCode = await main(${JSON.stringify(tool)}, process.argv.slice(2), ${JSON.stringify(pbsName)});`,
    '',
  ].join('\n');
}

export interface InstallResult {
  written: string[];
  removed: string[];
}

/** Writes (or with `remove`, deletes) the wrappers in `dir`; refuses to touch files that are not ours. */
export function installPbsNames(dir: string, clientModule: string, remove = false): InstallResult {
  const out: InstallResult = { written: [], removed: [] };
  const target = resolve(dir);
  const foreign = Object.keys(PBS_NAMES).filter((n) => {
    const p = join(target, n);
    return existsSync(p) && !readFileSync(p, 'utf8').includes(MARK);
  });
  if (foreign.length > 0) {
    throw new UsageError(`${target}: ${foreign.join(', ')} already exist and are not Copper's (another batch system?); choose another --prefix`);
  }
  if (!remove) mkdirSync(target, { recursive: true });
  for (const name of Object.keys(PBS_NAMES)) {
    const p = join(target, name);
    if (remove) {
      if (existsSync(p)) {
        rmSync(p);
        out.removed.push(p);
      }
      continue;
    }
    writeFileSync(p, wrapperText(name, clientModule), { mode: 0o755 });
    out.written.push(p);
  }
  return out;
}

/** The command: `gc install-pbs-names [--prefix DIR] [--remove]`; default DIR /usr/local/bin. */
export function installPbsNamesCommand(argv: string[], clientModule: string): number {
  let prefix = '/usr/local/bin';
  let remove = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--prefix' && argv[i + 1] !== undefined) prefix = argv[++i];
    else if (a.startsWith('--prefix=')) prefix = a.slice('--prefix='.length);
    else if (a === '--remove') remove = true;
    else throw new UsageError(`install-pbs-names: unknown argument "${a}" (use --prefix DIR, --remove)`);
  }
  const r = installPbsNames(prefix, clientModule, remove);
  for (const p of r.written) process.stdout.write(`${p}\n`);
  for (const p of r.removed) process.stdout.write(`removed ${p}\n`);
  return 0;
}
