/**
 * Directories only gcd's own user may enter, made safely in shared places such as /dev/shm
 * (issue 13 item 8). /dev/shm is world-writable: another local user could pre-create
 * /dev/shm/copper (to read or swap guest RAM files) or put a symlink there (so gcd writes
 * RAM where they choose). Every component from the first world-writable ancestor down must be
 * a real directory (not a symlink), owned by gcd's user, writable by nobody else; the last one
 * is mode 0700. A component that breaks this is refused, never repaired: it was not ours.
 * With `mode` 0711 (VM uids, vm-uid.ts) the folders gcd makes are traversable by others but
 * still listable and writable by gcd alone: each VM's uid reaches its own files by name.
 */
import { chmod, lstat, mkdir, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { CopperError } from '../errors.js';

export class UnsafeDirError extends CopperError {
  override readonly code = 'EUNSAFEDIR';
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`refusing to use ${path}: ${reason}`);
  }
}

const STICKY = 0o1000;

function euid(): number {
  return typeof process.geteuid === 'function' ? process.geteuid() : 0;
}

/** Make (or check) `path` and its missing ancestors; returns when it is safe to use. */
export async function ensurePrivateDir(path: string, mode: 0o700 | 0o711 = 0o700): Promise<void> {
  const abs = resolve(path);
  const parts: string[] = [];
  for (let p = abs; p !== dirname(p); p = dirname(p)) parts.unshift(p);
  const me = euid();
  // Until a component writable by others is met, components are the system's (root's): trusted.
  let shared = false;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    const last = i === parts.length - 1;
    let st = await lstatOrUndefined(p);
    if (!st) {
      // Not recursive: each new component is made, then checked like an old one (a racer who
      // made it first is caught by the lstat below).
      await mkdir(p, { mode }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      st = await lstat(p);
    }
    if (shared) {
      if (st.isSymbolicLink()) throw new UnsafeDirError(p, 'it is a symbolic link');
      if (!st.isDirectory()) throw new UnsafeDirError(p, 'it is not a directory');
      // Root's or ours only (in a sticky folder an entry is its maker's); a nested sticky
      // folder (a /dev/shm inside /tmp) is a shared place again, anything else writable is not.
      if (st.uid !== me && st.uid !== 0) throw new UnsafeDirError(p, `it is owned by uid ${st.uid}, not ${me}`);
      if (st.mode & 0o022 && (last || !(st.mode & STICKY))) throw new UnsafeDirError(p, `others may write in it (mode ${(st.mode & 0o7777).toString(8)})`);
      if (last && st.uid !== me) throw new UnsafeDirError(p, `it is owned by uid ${st.uid}, not ${me}`);
    } else {
      // A system component (e.g. /dev -> somewhere): follow it, but it must be root's or ours.
      if (st.uid !== 0 && st.uid !== me) throw new UnsafeDirError(p, `it is owned by uid ${st.uid}`);
      const target: Stats = st.isSymbolicLink() ? await stat(p) : st;
      if (!target.isDirectory()) throw new UnsafeDirError(p, 'it is not a directory');
      if (target.uid !== 0 && target.uid !== me) throw new UnsafeDirError(p, `it is owned by uid ${target.uid}`);
      if (target.mode & 0o022) {
        if (!(target.mode & STICKY)) throw new UnsafeDirError(p, `others may rename entries in it (mode ${(target.mode & 0o7777).toString(8)})`);
        shared = true; // /dev/shm, /tmp: what lies below may be anybody's
      }
      if (last && target.uid !== me) throw new UnsafeDirError(p, `it is owned by uid ${target.uid}, not ${me}`);
    }
    if (last && (st.mode & 0o777) !== mode) await chmod(p, mode);
    // Our own folder on the way down (below the shared place): traversable too when asked.
    else if (!last && shared && mode === 0o711 && st.uid === me && (st.mode & 0o011) !== 0o011) await chmod(p, (st.mode & 0o777) | 0o011);
  }
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
