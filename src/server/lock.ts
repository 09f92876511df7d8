import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { CopperError } from '../errors.js';

export class AlreadyRunningError extends CopperError {
  override readonly code = 'ERUNNING';
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One gcd per state folder: a pid file created exclusively. A pid file whose process is
 * gone (gcd was killed -9) is taken over.
 */
export function acquireLock(path: string, stateDir: string): () => void {
  for (let i = 0; i < 2; i++) {
    try {
      const fd = openSync(path, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => {
        try {
          if (Number(readFileSync(path, 'utf8')) === process.pid) rmSync(path, { force: true });
        } catch {
          // already gone
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(path, 'utf8').trim());
      if (pid && pid !== process.pid && alive(pid)) {
        throw new AlreadyRunningError(`another gcd (pid ${pid}) is running on ${stateDir}`);
      }
      rmSync(path, { force: true });
    }
  }
  throw new AlreadyRunningError(`could not take the lock ${path}`);
}
