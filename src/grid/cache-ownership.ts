/**
 * Who may open the files of a node's snapshot cache (snapshot-cache.ts): the clones of a
 * snapshot run as its headnode's uid (meta.json `vm.uid`, vm/vm-uid.ts), so its state file,
 * RAM file and disk layers are given to that uid (0600) and the folders on the way are root's
 * 0711. A layer two uids' snapshots share is the same server file in both chains (a blob's key
 * names an inode), which both uids read on the server too: an image's base layer or kernel.
 * Such a layer becomes root's 0644, readable by every VM uid and writable by none.
 */
import { chmod, chown } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { SnapshotPaths } from '../vm/layout.js';
import { giveToVm, traversable, vmUidsEnabled } from '../vm/vm-uid.js';

export class CacheOwnership {
  /** Blob key -> the one uid using it, or 'shared'. */
  private readonly owners = new Map<string, number | 'shared'>();

  /** A blob (disk layer, kernel, initrd) used by a snapshot of `uid`. */
  async blob(key: string, path: string, uid: number | undefined): Promise<void> {
    if (!vmUidsEnabled() || uid === undefined) return;
    await traversable(dirname(dirname(path)), dirname(path));
    const was = this.owners.get(key);
    if (was === uid || was === 'shared') return;
    if (was === undefined) {
      this.owners.set(key, uid);
      await giveToVm(path, uid, 0o600);
      return;
    }
    this.owners.set(key, 'shared');
    await chown(path, 0, 0);
    await chmod(path, 0o644);
  }

  /** A blob removed from the cache. */
  forget(key: string): void {
    this.owners.delete(key);
  }

  /** The snapshot's own files: its folder, state and RAM file. */
  async snapshot(sp: SnapshotPaths, uid: number | undefined): Promise<void> {
    if (!vmUidsEnabled() || uid === undefined) return;
    await traversable(dirname(dirname(sp.dir)), dirname(sp.dir), sp.dir, dirname(dirname(sp.ramFile)), dirname(sp.ramFile));
    await giveToVm(sp.state, uid, 0o600);
    await giveToVm(sp.ramFile, uid, 0o600);
  }
}
