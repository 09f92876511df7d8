import { posix } from 'node:path';
import type { JobRecord } from '../queue/job.js';
import { expandPathVariables } from '../pbs/path-variables.js';

/** PBS default output paths: `<workdir>/<name>.o<seq>` and `.e<seq>`; a directory -o gets the default name inside it. */
export function defaultOutputPaths(job: JobRecord): { out: string; err: string } {
  const s = job.spec;
  const resolve = (p: string | undefined, kind: 'o' | 'e'): string => {
    // Array tasks: `<name>.o<seq>.<index>`, as PBS names them.
    const name = `${s.name}.${kind}${job.seq}${job.arrayIndex !== undefined ? `.${job.arrayIndex}` : ''}`;
    if (!p) return posix.join(s.cwd, name);
    p = expandPathVariables(p, { id: job.id, name: s.name });
    const abs = posix.isAbsolute(p) ? p : posix.join(s.cwd, p);
    return p.endsWith('/') ? posix.join(abs, name) : abs;
  };
  return { out: resolve(s.stdoutPath, 'o'), err: resolve(s.stderrPath, 'e') };
}
