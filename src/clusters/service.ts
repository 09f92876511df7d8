/**
 * Virtual clusters: `gc clone N` forks the calling VM (a headnode, or a clone: a deeper
 * generation) into N running clones on a private L2 shared with the headnode, with fork()
 * semantics; `gc clones` lists them; `gc kill` and TTLs destroy them.
 *
 * Who is calling comes from the API channel (GuestIdentity), never from the request. Clones
 * are detached QEMUs (they outlive gcd, like headnodes) run by a VmHost of their own (seen
 * through ClusterVms, vms.ts), on their own folders (<stateDir>/clusters/vm/): the job scheduler's crash sweep never sees them.
 * The registry (<stateDir>/clusters/registry.json) is written before a clone's QEMU starts and
 * after it is gone, so a restarted gcd re-attaches or destroys every clone, never loses one.
 *
 * All or nothing: a batch is checked against the quota whole, its ids are reserved before
 * anything starts, and any failure destroys every clone of the batch and its snapshot.
 * One batch or kill at a time per cluster (KeyedLock per headnode); the registry itself is
 * changed under one mutex, so quota checks across a user's headnodes see every reservation.
 *
 * Over 400 lines for now: one class whose batch, kill, TTL and recovery paths share the
 * registry, its mutex and the per-cluster lock; splitting it is left for a later change.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { settings } from '../config/settings.js';
import { CopperError, DriverError, NotFoundError, StateError, UsageError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { pidAlive } from '../vm/vm-process.js';
import { KeyedLock } from '../vm/keyed-lock.js';
import type { LiveHeadnode } from '../headnodes/manager.js';
import type { GuestIdentity, HeadnodeSpec } from '../headnodes/types.js';
import { userLimit } from '../scheduler/policy.js';
import {
  MAX_CLONE_ID, cloneName, cloneVmId, clusterNetwork, hostsBlock, memberAddress, memberMac, memberNic,
} from './addressing.js';
import { CLUSTER_NIC_ID, ensureClusterNic } from './cluster-nic.js';
import { CLONE_IDENTITY, HEADNODE_PREPARE, cloneEnvText, withPrefix, type MemberIdentity } from './guest-scripts.js';
import { processMemory } from './proc-mem.js';
import { checkCloneBatch, cloneUsage, type CloneQuota } from './quota.js';
import { ClusterRegistry, type CloneEntry, type ClusterEntry } from './registry.js';
import type { CloneInfo, CloneUsageRow, KillResult, KillSelector, WhoAmI } from './types.js';
import type { ClusterVms } from './vms.js';

/** What the service needs of the headnode manager. */
export interface ClusterHeadnodes {
  withRunning<T>(name: string, fn: (h: LiveHeadnode) => Promise<T>): Promise<T>;
  spec(name: string): Promise<HeadnodeSpec>;
}

export interface ClusterServiceOptions {
  stateDir: string;
  /** The clusters' own driver: cloneLifetime 'detached', its own state folders. */
  driver: ClusterVms;
  headnodes: ClusterHeadnodes;
  /** The quota in force (read at each `gc clone`). */
  quota: () => CloneQuota;
  /** Largest N of one `gc clone N` (default 64). */
  maxBatch?: number;
  /** Deepest generation (default 16): each one adds a disk layer. */
  maxGeneration?: number;
  /** Clones started at once in a batch (default GC_CLONE_CONCURRENCY, else 4). */
  concurrency?: number;
  /** Longest TTL in seconds (default 30 days). */
  maxTtlSec?: number;
  /** How often dead clones and TTLs are looked at, ms (default 2000). */
  tickMs?: number;
}

export interface CloneRequest {
  n: number;
  /** Seconds until the clones are destroyed; none: until killed. */
  ttlSec?: number;
}

/** Who acts: a VM from its channel, or the admin naming a headnode (acts as that headnode). */
export type ClusterCaller = Pick<GuestIdentity, 'kind' | 'vmId' | 'headnode'> & { admin?: boolean };

const GUEST_SCRIPT_TIMEOUT_MS = 60_000;

export class ClusterService {
  private readonly driver: ClusterVms;
  private readonly lock = new KeyedLock();
  /** Serializes registry changes (quota checks see all reservations). */
  private readonly mutex = new KeyedLock();
  private readonly maxBatch: number;
  private readonly maxGeneration: number;
  private readonly concurrency: number;
  private readonly maxTtlSec: number;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly pending = new Set<Promise<unknown>>();

  private constructor(
    private readonly o: ClusterServiceOptions,
    private readonly registry: ClusterRegistry,
  ) {
    this.driver = o.driver;
    this.maxBatch = o.maxBatch ?? 64;
    this.maxGeneration = o.maxGeneration ?? 16;
    this.concurrency = o.concurrency ?? settings().cloneConcurrency;
    this.maxTtlSec = o.maxTtlSec ?? 30 * 86_400;
  }

  /** Load the registry, re-attach or destroy what a previous gcd left, start the TTL clock. */
  static async open(o: ClusterServiceOptions): Promise<ClusterService> {
    const registry = await ClusterRegistry.load(join(o.stateDir, 'clusters'));
    const s = new ClusterService(o, registry);
    await s.recover();
    s.schedule();
    return s;
  }

  /** The cluster NIC backend of a headnode that has a cluster (for snapshots to record). */
  clusterNicOf(headnode: string): ReturnType<typeof memberNic> | undefined {
    const c = this.registry.cluster(headnode);
    return c ? memberNic(c.network, 0) : undefined;
  }

  // -------------------------------------------------------------------- clone

  async clone(caller: ClusterCaller, req: CloneRequest): Promise<CloneInfo[]> {
    const { n } = req;
    if (!Number.isInteger(n) || n < 1 || n > this.maxBatch) {
      throw new UsageError(`gc clone N: N must be a whole number from 1 to ${this.maxBatch}, not ${String(n)}`);
    }
    if (req.ttlSec !== undefined && (!Number.isInteger(req.ttlSec) || req.ttlSec < 1 || req.ttlSec > this.maxTtlSec)) {
      throw new UsageError(`--ttl must be a whole number of seconds from 1 to ${this.maxTtlSec}, not ${String(req.ttlSec)}`);
    }
    if (this.closed) throw new StateError('gcd is shutting down');
    const hn = caller.headnode;
    const spec = await this.o.headnodes.spec(hn);
    return this.lock.run(hn, async () => {
      const { cluster, parent, batch } = await this.reserve(caller, spec, req);
      const t0 = Date.now();
      try {
        const snapshotId = parent ? await this.snapshotOfClone(cluster, parent) : await this.snapshotOfHeadnode(cluster);
        const tSnap = Date.now();
        await this.mutex.run('registry', async () => {
          for (const e of batch) {
            e.snapshotId = snapshotId;
            e.diskBase = snapshotId;
          }
          await this.registry.save();
        });
        await pool(batch, this.concurrency, (e) => this.startClone(cluster, e, parent, { rank: batch.indexOf(e), size: batch.length }));
        await this.mutex.run('registry', async () => {
          const now = Date.now();
          for (const e of batch) {
            e.state = 'running';
            if (req.ttlSec !== undefined) e.expiresAt = now + req.ttlSec * 1000;
          }
          await this.registry.save();
        });
        this.schedule();
        const from = parent ? cloneName(hn, parent.id) : hn;
        log.info(`cluster ${hn}: ${n} clone(s) of ${from}: ${batch.map((e) => e.id).join(' ')}`, { snapshotMs: tSnap - t0, clonesMs: Date.now() - tSnap });
        return Promise.all(batch.map((e) => this.info(cluster, e)));
      } catch (err) {
        await this.discard(cluster, batch);
        const msg = errorMessage(err).split('\n')[0];
        log.warn(`cluster ${hn}: gc clone ${n} failed, every clone of the batch destroyed: ${msg}`);
        if (err instanceof CopperError) throw err;
        throw new DriverError(`gc clone ${n} failed (none kept): ${msg}`, { cause: err });
      }
    });
  }

  /** Quota, generation and ids, written down ('creating') before anything starts. */
  private reserve(caller: ClusterCaller, spec: HeadnodeSpec, req: CloneRequest): Promise<{ cluster: ClusterEntry; parent?: CloneEntry; batch: CloneEntry[] }> {
    return this.mutex.run('registry', async () => {
      const hn = spec.name;
      let parent: CloneEntry | undefined;
      if (caller.kind === 'clone') {
        parent = this.registry.findVm(caller.vmId)?.clone;
        if (!parent || parent.state !== 'running') throw new StateError(`this clone (${caller.vmId}) is not a running member of a cluster`);
        if (parent.generation + 1 > this.maxGeneration) {
          throw new UsageError(`gc clone: generation ${parent.generation + 1} would be deeper than ${this.maxGeneration}, the limit`);
        }
      }
      const holders = this.registry.allClones().map(({ cluster }) => ({ user: cluster.owner, group: cluster.group }));
      checkCloneBatch(this.o.quota(), holders, { user: spec.owner, group: spec.group }, req.n);
      const cluster = this.registry.ensureCluster(hn, spec.owner, spec.group);
      const ids = this.registry.freeIds(cluster, req.n);
      if (!ids) {
        throw new StateError(`gc clone ${req.n}: a cluster holds at most ${MAX_CLONE_ID} clones; ${hn} has ${cluster.clones.length}`);
      }
      const now = Date.now();
      const batch: CloneEntry[] = ids.map((id) => ({
        id, vmId: cloneVmId(hn, id), generation: parent ? parent.generation + 1 : 1, parent: parent?.id ?? 0,
        snapshotId: '', diskBase: '', createdAt: now, state: 'creating',
      }));
      for (const e of batch) this.registry.addClone(cluster, e);
      await this.registry.save();
      return parent ? { cluster, parent, batch } : { cluster, batch };
    });
  }

  /** Plug the cluster NIC in (first time), set it up in the guest, then snapshot. */
  private async snapshotOfHeadnode(cluster: ClusterEntry): Promise<string> {
    const hn = cluster.headnode;
    const nic = memberNic(cluster.network, 0);
    if (nic.kind !== 'mcast') throw new DriverError('cluster NICs are multicast');
    const t0 = Date.now();
    await this.o.headnodes.withRunning(hn, async (h) => {
      const had = await ensureClusterNic(h.vm.qmp, nic);
      const env = cloneEnvText(this.identity(cluster, 0, 0, ''));
      const st = await h.agent.run(
        '/bin/sh',
        ['-c', HEADNODE_PREPARE, 'sh', nic.mac, withPrefix(memberAddress(cluster.network, 0)), env, hostsBlock(hn, cluster.network)],
        { timeoutMs: GUEST_SCRIPT_TIMEOUT_MS },
      );
      if (st.exitCode !== 0) {
        throw new DriverError(`headnode ${hn}: setting up its cluster network failed: ${oneLine(st.err) || `status ${st.exitCode}`}`);
      }
      log.debug(`cluster ${hn}: headnode ready for a fork`, { nicPluggedNow: !had, ms: Date.now() - t0 });
    });
    const snap = await this.driver.snapshot(hn);
    try {
      await this.mutex.run('registry', async () => {
        this.registry.addSnapshot({ id: snap.id, headnode: hn, createdAt: snap.createdAt });
        await this.registry.save();
      });
    } catch (err) {
      await this.driver.releaseSnapshot(snap.id).catch(() => undefined);
      throw err;
    }
    return snap.id;
  }

  /** Snapshot a clone (deeper generation); its disk backs onto the new snapshot from then on. */
  private async snapshotOfClone(cluster: ClusterEntry, parent: CloneEntry): Promise<string> {
    const id = `${cluster.headnode}.${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
    // Written down first: if the disk layer freezes and gcd dies, the snapshot stays needed.
    await this.mutex.run('registry', async () => {
      this.registry.addSnapshot({ id, headnode: cluster.headnode, parent: parent.diskBase, createdAt: Date.now() });
      parent.diskBase = id;
      await this.registry.save();
    });
    const origin = await this.driver.snapshotMeta(parent.snapshotId);
    await this.driver.snapshotClone(parent.vmId, origin, id);
    return id;
  }

  private async startClone(cluster: ClusterEntry, e: CloneEntry, parent: CloneEntry | undefined, batch: { rank: number; size: number }): Promise<void> {
    const hn = cluster.headnode;
    await this.driver.clone({
      cloneId: e.vmId, snapshotId: e.snapshotId, hostname: cloneName(hn, e.id),
      clusterNic: memberNic(cluster.network, e.id), clusterLinkDown: true, init: 'none',
    });
    const env = cloneEnvText({
      ...this.identity(cluster, e.id, e.generation, parent ? cloneName(hn, parent.id) : hn), rank: batch.rank, batchSize: batch.size,
    });
    const t0 = Date.now();
    await this.driver.withClone(e.vmId, async (c) => {
      const st = await c.agent.run(
        '/bin/sh',
        [
          '-c', CLONE_IDENTITY, 'sh', memberMac(cluster.network, e.id), withPrefix(memberAddress(cluster.network, e.id)), env,
          cloneName(hn, e.id), randomBytes(16).toString('hex'), (Date.now() / 1000).toFixed(3), randomBytes(32).toString('hex'),
        ],
        { timeoutMs: GUEST_SCRIPT_TIMEOUT_MS },
      );
      if (st.exitCode !== 0) {
        throw new DriverError(`clone ${cloneName(hn, e.id)}: setting its cluster identity failed: ${oneLine(st.err) || `status ${st.exitCode}`}`);
      }
      // Only now on the L2, under its own MAC and address (the guest announces itself: arp_notify).
      await c.vm.qmp.execute('set_link', { name: CLUSTER_NIC_ID, up: true });
      await c.vm.qmp.execute('announce-self', { initial: 50, max: 550, rounds: 2, step: 100 }).catch(() => undefined);
    });
    log.debug(`clone ${e.vmId} on the cluster network`, { driver: this.driver.cloneTimings(e.vmId), identityMs: Date.now() - t0 });
  }

  private identity(cluster: ClusterEntry, id: number, generation: number, parent: string): MemberIdentity {
    const hn = cluster.headnode;
    return {
      id, generation, parent, headnode: hn,
      address: memberAddress(cluster.network, id),
      name: id === 0 ? hn : cloneName(hn, id),
      subnet: clusterNetwork(cluster.network).subnet,
      vmId: id === 0 ? hn : cloneVmId(hn, id),
    };
  }

  /** Destroy a failed batch (whatever got made) and forget it. */
  private async discard(cluster: ClusterEntry, batch: CloneEntry[]): Promise<void> {
    await pool(batch, this.concurrency, async (e) => {
      await this.driver.destroy(e.vmId).catch((err: unknown) => {
        log.error(`destroying clone ${e.vmId}: ${errorMessage(err)}`);
      });
    });
    await this.mutex.run('registry', async () => {
      for (const e of batch) this.registry.removeClone(cluster, e.id);
      await this.collectSnapshots();
      await this.registry.save();
    });
  }

  // --------------------------------------------------------------- list, whoami

  async list(headnode: string, opts: { admin?: boolean } = {}): Promise<CloneInfo[]> {
    const cluster = this.registry.cluster(headnode);
    if (!cluster) return [];
    return Promise.all(cluster.clones.map((e) => this.info(cluster, e, opts.admin === true)));
  }

  /** Every cluster's clones (admin). */
  async listAll(): Promise<CloneInfo[]> {
    const out: CloneInfo[] = [];
    for (const c of this.registry.allClusters()) out.push(...(await this.list(c.headnode, { admin: true })));
    return out;
  }

  private async info(cluster: ClusterEntry, e: CloneEntry, admin = false): Promise<CloneInfo> {
    const hn = cluster.headnode;
    const pid = this.driver.clonePid(e.vmId);
    const alive = pid !== undefined && pidAlive(pid, e.vmId);
    const info: CloneInfo = {
      id: e.id,
      name: cloneName(hn, e.id),
      headnode: hn,
      generation: e.generation,
      parent: e.parent === 0 ? hn : cloneName(hn, e.parent),
      state: e.state === 'running' && !alive ? 'dead' : e.state,
      address: memberAddress(cluster.network, e.id),
      mac: memberMac(cluster.network, e.id),
      createdAt: e.createdAt,
      uptimeSec: Math.max(0, Math.round((Date.now() - e.createdAt) / 1000)),
    };
    if (e.expiresAt !== undefined) info.expiresAt = e.expiresAt;
    if (alive) {
      const mem = await processMemory(pid);
      if (mem) {
        info.pssMiB = mem.pssMiB;
        info.privateMiB = mem.privateMiB;
      }
      if (admin) info.pid = pid;
    }
    return info;
  }

  whoami(caller: ClusterCaller): WhoAmI {
    const cluster = this.registry.cluster(caller.headnode);
    if (caller.kind === 'headnode') {
      const w: WhoAmI = { kind: 'headnode', headnode: caller.headnode, id: 0, generation: 0, name: caller.headnode };
      if (cluster) w.address = memberAddress(cluster.network, 0);
      return w;
    }
    const found = this.registry.findVm(caller.vmId);
    if (!found) throw new NotFoundError(`this VM (${caller.vmId}) is not a member of a cluster`);
    const { clone } = found;
    const hn = found.cluster.headnode;
    return {
      kind: 'clone', headnode: hn, id: clone.id, generation: clone.generation, name: cloneName(hn, clone.id),
      address: memberAddress(found.cluster.network, clone.id), parent: clone.parent === 0 ? hn : cloneName(hn, clone.parent),
    };
  }

  /** Who holds how many live clones, with each user's limit. */
  usage(filterUser?: string): CloneUsageRow[] {
    const holders = this.registry.allClones().map(({ cluster }) => ({ user: cluster.owner, group: cluster.group }));
    const usage = cloneUsage(holders);
    const groupOf = new Map(this.registry.allClusters().map((c) => [c.owner, c.group]));
    const quota = this.o.quota();
    const rows: CloneUsageRow[] = [];
    for (const [user, counts] of usage.users) {
      if (filterUser !== undefined && user !== filterUser) continue;
      const fileLimit = quota.config ? userLimit(quota.config, user, 'maxClones') : undefined;
      rows.push({ user, group: groupOf.get(user) ?? '', clones: counts.clones, limit: fileLimit ?? quota.maxPerUser });
    }
    if (filterUser !== undefined && rows.length === 0) {
      const fileLimit = quota.config ? userLimit(quota.config, filterUser, 'maxClones') : undefined;
      rows.push({ user: filterUser, group: '', clones: 0, limit: fileLimit ?? quota.maxPerUser });
    }
    return rows.sort((a, b) => a.user.localeCompare(b.user));
  }

  // ---------------------------------------------------------------------- kill

  async kill(caller: ClusterCaller, sel: KillSelector): Promise<KillResult> {
    const hn = caller.headnode;
    if ('ids' in sel) {
      if (sel.ids.length === 0) throw new UsageError('gc kill: name clone ids, or --generation G, or --all');
      for (const id of sel.ids) {
        if (!Number.isInteger(id) || id < 1 || id > MAX_CLONE_ID) throw new UsageError(`gc kill: '${String(id)}' is not a clone id (1-${MAX_CLONE_ID})`);
      }
    }
    if ('generation' in sel && (!Number.isInteger(sel.generation) || sel.generation < 1)) {
      throw new UsageError(`gc kill --generation: a generation is a whole number >= 1, not ${String(sel.generation)}`);
    }
    return this.lock.run(hn, async () => {
      const cluster = this.registry.cluster(hn);
      const clones = cluster?.clones ?? [];
      let targets: CloneEntry[];
      if ('ids' in sel) {
        const missing = [...new Set(sel.ids)].filter((id) => !clones.some((c) => c.id === id));
        if (missing.length) {
          const have = clones.map((c) => c.id).join(', ');
          throw new NotFoundError(`gc kill: no clone ${missing.join(', ')} in the cluster of ${hn} (${have ? `its clones: ${have}` : 'it has none'}); nothing killed`);
        }
        targets = clones.filter((c) => sel.ids.includes(c.id));
      } else if ('generation' in sel) {
        targets = clones.filter((c) => c.generation === sel.generation);
      } else {
        targets = [...clones];
      }
      if (!cluster || targets.length === 0) return { killed: [] };
      const killed = await Promise.all(targets.map((e) => this.info(cluster, e)));
      // A clone killing itself: its answer must leave before its VM goes.
      const self = caller.kind === 'clone' ? targets.find((e) => e.vmId === caller.vmId) : undefined;
      const now = targets.filter((e) => e !== self);
      await this.destroyClones(cluster, now, self ? [self] : []);
      if (self) this.later(1000, () => this.lock.run(hn, () => this.destroyClones(cluster, [self], [])));
      for (const k of killed) k.state = 'killing';
      log.info(`cluster ${hn}: killed ${killed.map((k) => k.id).join(' ')}`);
      return { killed };
    });
  }

  /** Destroy clones (marked 'killing' first, with `alsoMark` too), then forget them. Caller holds the cluster lock. */
  private async destroyClones(cluster: ClusterEntry, entries: CloneEntry[], alsoMark: CloneEntry[]): Promise<void> {
    if (entries.length === 0 && alsoMark.length === 0) return;
    await this.mutex.run('registry', async () => {
      for (const e of [...entries, ...alsoMark]) e.state = 'killing';
      await this.registry.save();
    });
    const failed: string[] = [];
    await pool(entries, this.concurrency, async (e) => {
      try {
        await this.driver.destroy(e.vmId);
      } catch (err) {
        failed.push(`${e.vmId}: ${errorMessage(err)}`);
      }
    });
    await this.mutex.run('registry', async () => {
      for (const e of entries) if (!failed.some((f) => f.startsWith(`${e.vmId}:`))) this.registry.removeClone(cluster, e.id);
      await this.collectSnapshots();
      await this.registry.save();
    });
    if (failed.length) throw new DriverError(`destroying ${failed.join('; ')}`);
  }

  /** The headnode is being destroyed: its whole cluster goes first, and its network is freed. */
  async dropHeadnode(headnode: string): Promise<void> {
    await this.lock.run(headnode, async () => {
      const cluster = this.registry.cluster(headnode);
      if (!cluster) return;
      await this.destroyClones(cluster, [...cluster.clones], []);
      await this.mutex.run('registry', async () => {
        this.registry.dropCluster(headnode);
        await this.registry.save();
      });
    });
  }

  /** Release snapshots nothing needs; free the RAM of those only a disk layer needs. Caller holds the mutex. */
  private async collectSnapshots(): Promise<void> {
    const { whole, diskOnly } = this.registry.needed();
    for (const id of this.registry.snapshotIds()) {
      if (whole.has(id)) continue;
      if (diskOnly.has(id)) {
        await this.driver.releaseSnapshotRam(id);
        continue;
      }
      await this.driver.releaseSnapshot(id).catch((err: unknown) => log.warn(`releasing snapshot ${id}: ${errorMessage(err)}`));
      this.registry.removeSnapshot(id);
    }
  }

  // ------------------------------------------------------------ TTL and health

  /** Every tickMs: destroy clones whose TTL ran out and clean up those whose QEMU died. */
  private schedule(): void {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const run = this.tick()
        .catch((err: unknown) => log.error(`cluster upkeep: ${errorMessage(err)}`))
        .finally(() => this.schedule());
      this.track(run);
    }, this.o.tickMs ?? 2000);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const now = Date.now();
    const due = new Map<string, { cluster: ClusterEntry; entries: CloneEntry[]; why: string[] }>();
    for (const { cluster, clone } of this.registry.allClones()) {
      if (clone.state !== 'running') continue;
      let why: string | undefined;
      if (clone.expiresAt !== undefined && clone.expiresAt <= now) why = `${clone.id}: TTL ran out`;
      else {
        const pid = this.driver.clonePid(clone.vmId);
        if (pid === undefined || !pidAlive(pid, clone.vmId)) why = `${clone.id}: its QEMU exited`;
      }
      if (!why) continue;
      const d = due.get(cluster.headnode) ?? { cluster, entries: [], why: [] };
      d.entries.push(clone);
      d.why.push(why);
      due.set(cluster.headnode, d);
    }
    for (const [hn, d] of due) {
      log.info(`cluster ${hn}: destroying ${d.why.join('; ')}`);
      await this.lock.run(hn, async () => {
        // Still there and still running (a kill may have got there first)?
        const still = d.entries.filter((e) => d.cluster.clones.includes(e) && e.state === 'running');
        await this.destroyClones(d.cluster, still, []);
      });
    }
  }

  // ------------------------------------------------------------------ recovery

  /**
   * After a gcd start: every registered clone is re-attached (still running, answering) or
   * destroyed; clone folders and snapshots the registry does not know are deleted.
   */
  private async recover(): Promise<void> {
    const now = Date.now();
    for (const cluster of this.registry.allClusters()) {
      let headnodeGone = false;
      await this.o.headnodes.spec(cluster.headnode).catch((err: unknown) => {
        if (err instanceof NotFoundError) headnodeGone = true;
      });
      const lost: CloneEntry[] = [];
      for (const e of cluster.clones) {
        let why: string | undefined;
        if (headnodeGone) why = 'its headnode no longer exists';
        else if (e.state !== 'running') why = `it was ${e.state} when gcd stopped`;
        else if (e.expiresAt !== undefined && e.expiresAt <= now) why = 'its TTL ran out';
        else if (!(await this.driver.reattachClone(e.vmId))) why = 'its QEMU is gone or does not answer';
        if (why) {
          lost.push(e);
          log.warn(`clone ${e.vmId}: destroyed after the gcd restart: ${why}`);
        } else {
          log.info(`clone ${e.vmId} re-attached`);
        }
      }
      for (const e of lost) await this.driver.destroy(e.vmId).catch((err: unknown) => log.error(`destroying ${e.vmId}: ${errorMessage(err)}`));
      for (const e of lost) this.registry.removeClone(cluster, e.id);
      if (headnodeGone) this.registry.dropCluster(cluster.headnode);
    }
    // Folders of clones the registry does not know (none, unless the state folder was edited).
    const keep = new Set(this.registry.allClones().map(({ clone }) => clone.vmId));
    const swept = await this.driver.sweep(keep);
    if (swept.length) log.warn(`destroyed unregistered cluster clones: ${swept.join(' ')}`);
    // Snapshots nobody registered (gcd died between making one and writing it down).
    for (const id of await this.driver.listSnapshots()) {
      if (!this.registry.hasSnapshot(id)) await this.driver.releaseSnapshot(id).catch(() => undefined);
    }
    // Template leftovers of a clone snapshot cut short (template QEMUs die with gcd).
    await this.driver.sweepTransfers();
    await this.collectSnapshots();
    await this.registry.save();
  }

  // ---------------------------------------------------------------------- misc

  private later(ms: number, fn: () => Promise<unknown>): void {
    const run = new Promise((r) => setTimeout(r, ms)).then(fn).catch((err: unknown) => log.error(`cluster: ${errorMessage(err)}`));
    this.track(run);
  }

  private track(p: Promise<unknown>): void {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Stop the clock and let go of the clones: they keep running (detached) for the next gcd. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await Promise.allSettled([...this.pending]);
    await this.driver.detach();
  }
}

function oneLine(b: Buffer | null | undefined): string {
  return (b?.toString('utf8') ?? '').trim().split('\n').pop() ?? '';
}

/**
 * Run fn over items, at most `limit` at a time. After the first failure no new item starts;
 * rejects with that error once the running ones have settled.
 */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let first: unknown;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (next < items.length && !failed) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        if (!failed) {
          failed = true;
          first = err;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed) throw first;
}
