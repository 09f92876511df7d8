/**
 * The durable record of every virtual cluster: `<stateDir>/clusters/registry.json`, written
 * atomically (temp file + rename) after each change, so that after a crash (gcd killed -9)
 * the next gcd knows every clone that may be running and every snapshot that may be needed.
 *
 * A clone is written down ('creating') before its QEMU is started and removed only after the
 * VM and its files are gone, so the registry is always a superset of what runs: recovery
 * re-attaches or destroys, and never has to guess.
 *
 * Snapshots form a tree: a clone's snapshot (a deeper generation) has a disk layer that backs
 * onto the snapshot its clone's disk backs onto (`parent`). A snapshot is kept while a clone
 * was started from it (RAM and disk), a clone's current disk backs onto it, or another
 * snapshot's disk does.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DriverError, errorMessage } from '../errors.js';
import { writeJsonAtomic } from '../vm/json-file.js';
import { parseRecord } from '../json-record.js';
import { MAX_CLONE_ID, MAX_NETWORKS } from './addressing.js';
import { REGISTRY_FILE } from './registry.schema.js';

export type CloneState = 'creating' | 'running' | 'killing';

export interface CloneEntry {
  /** 1..253 within its cluster. */
  id: number;
  /** `<headnode>.c<id>`: QEMU name, driver clone id, API channel. */
  vmId: string;
  /** 1 for a clone of the headnode, g+1 for a clone of a generation-g clone. */
  generation: number;
  /** 0: the headnode, else the id of the clone it was forked from. */
  parent: number;
  /** The snapshot it was started from (its frozen RAM and disk). */
  snapshotId: string;
  /** The snapshot its current disk layer backs onto (changes when it is itself snapshotted). */
  diskBase: string;
  createdAt: number;
  /** When the TTL given at clone time runs out (ms since 1970). */
  expiresAt?: number;
  state: CloneState;
}

export interface ClusterEntry {
  headnode: string;
  owner: string;
  group: string;
  /** Network index (addressing.ts), unique among clusters. */
  network: number;
  clones: CloneEntry[];
}

export interface SnapshotEntry {
  id: string;
  headnode: string;
  /** The snapshot whose disk this one's frozen layer backs onto (none for a headnode's). */
  parent?: string;
  createdAt: number;
}

export interface RegistryFile {
  version: 1;
  clusters: ClusterEntry[];
  snapshots: SnapshotEntry[];
}

export class ClusterRegistry {
  private readonly clusters = new Map<string, ClusterEntry>();
  private readonly snapshots = new Map<string, SnapshotEntry>();
  private saving: Promise<void> = Promise.resolve();

  private constructor(readonly path: string) {}

  /** Reads `<dir>/registry.json` (none yet: empty). A corrupt file stops gcd with a clear error. */
  static async load(dir: string): Promise<ClusterRegistry> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const reg = new ClusterRegistry(join(dir, 'registry.json'));
    let text: string;
    try {
      text = await readFile(reg.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return reg;
      throw new DriverError(`cannot read ${reg.path}: ${errorMessage(err)}`, { cause: err });
    }
    const data = parseRecord(reg.path, 'cluster registry', text, REGISTRY_FILE);
    for (const c of data.clusters) reg.clusters.set(c.headnode, c);
    for (const s of data.snapshots) reg.snapshots.set(s.id, s);
    return reg;
  }

  /** Writes the whole registry; saves are serialized, each one writes the state at its turn. */
  save(): Promise<void> {
    const run = this.saving.then(() => {
      const data: RegistryFile = { version: 1, clusters: [...this.clusters.values()], snapshots: [...this.snapshots.values()] };
      return writeJsonAtomic(this.path, data);
    });
    this.saving = run.catch(() => undefined);
    return run;
  }

  // ------------------------------------------------------------------ clusters

  cluster(headnode: string): ClusterEntry | undefined {
    return this.clusters.get(headnode);
  }

  allClusters(): ClusterEntry[] {
    return [...this.clusters.values()];
  }

  /** The headnode's cluster, made (with a free network index) when it has none. */
  ensureCluster(headnode: string, owner: string, group: string): ClusterEntry {
    const known = this.clusters.get(headnode);
    if (known) return known;
    const used = new Set([...this.clusters.values()].map((c) => c.network));
    let network = 0;
    while (used.has(network)) network++;
    if (network >= MAX_NETWORKS) throw new DriverError(`no free cluster network: ${MAX_NETWORKS} clusters exist`);
    const c: ClusterEntry = { headnode, owner, group, network, clones: [] };
    this.clusters.set(headnode, c);
    return c;
  }

  /** Forget a cluster that has no clones left (its network index becomes free). */
  dropCluster(headnode: string): void {
    const c = this.clusters.get(headnode);
    if (c && c.clones.length === 0) this.clusters.delete(headnode);
  }

  // -------------------------------------------------------------------- clones

  /** The clone with this VM id, and its cluster. */
  findVm(vmId: string): { cluster: ClusterEntry; clone: CloneEntry } | undefined {
    for (const cluster of this.clusters.values()) {
      const clone = cluster.clones.find((c) => c.vmId === vmId);
      if (clone) return { cluster, clone };
    }
    return undefined;
  }

  allClones(): Array<{ cluster: ClusterEntry; clone: CloneEntry }> {
    const out: Array<{ cluster: ClusterEntry; clone: CloneEntry }> = [];
    for (const cluster of this.clusters.values()) for (const clone of cluster.clones) out.push({ cluster, clone });
    return out;
  }

  /** The n lowest free clone ids of a cluster; undefined when there are not that many. */
  freeIds(cluster: ClusterEntry, n: number): number[] | undefined {
    const used = new Set(cluster.clones.map((c) => c.id));
    const out: number[] = [];
    for (let id = 1; id <= MAX_CLONE_ID && out.length < n; id++) if (!used.has(id)) out.push(id);
    return out.length === n ? out : undefined;
  }

  addClone(cluster: ClusterEntry, clone: CloneEntry): void {
    if (cluster.clones.some((c) => c.id === clone.id)) throw new DriverError(`clone id ${clone.id} of ${cluster.headnode} is taken`);
    cluster.clones.push(clone);
    cluster.clones.sort((a, b) => a.id - b.id);
  }

  removeClone(cluster: ClusterEntry, id: number): void {
    cluster.clones = cluster.clones.filter((c) => c.id !== id);
  }

  // ----------------------------------------------------------------- snapshots

  addSnapshot(s: SnapshotEntry): void {
    this.snapshots.set(s.id, s);
  }

  removeSnapshot(id: string): void {
    this.snapshots.delete(id);
  }

  hasSnapshot(id: string): boolean {
    return this.snapshots.has(id);
  }

  snapshotIds(): string[] {
    return [...this.snapshots.keys()];
  }

  /**
   * What the clones and snapshots still need: `whole` (RAM and disk) and `diskOnly`
   * (a snapshot whose RAM no clone maps any more but whose disk a layer backs onto).
   */
  needed(): { whole: Set<string>; diskOnly: Set<string> } {
    const whole = new Set<string>();
    const disk = new Set<string>();
    for (const { clone } of this.allClones()) {
      whole.add(clone.snapshotId);
      disk.add(clone.diskBase);
    }
    // A snapshot's disk needs its parent's disk, and so on up the tree.
    const queue = [...whole, ...disk];
    while (queue.length) {
      const id = queue.pop()!;
      const p = this.snapshots.get(id)?.parent;
      if (p !== undefined && !disk.has(p)) {
        disk.add(p);
        queue.push(p);
      }
    }
    for (const id of whole) disk.delete(id);
    return { whole, diskOnly: disk };
  }
}
