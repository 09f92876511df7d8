/**
 * Clones of snapshots: start, lend, reattach after a restart, destroy, sweep.
 *
 * Start: qcow2 overlay on the frozen layer; QEMU with the same machine, the frozen RAM file
 * mapped private (copy-on-write), -incoming defer; load the device state; cont; resync the
 * guest agent; vCPUs hot-plugged or unplugged before cont for ncpus (vcpu-hotplug.ts), memory
 * DIMMs hot-plugged before cont for memMiB above the snapshot's (mem-hotplug.ts); clone-init gives it its own hostname, machine-id, entropy, clock and online vCPUs, by
 * default in the caller's first command (RunningClone.pendingInit).
 */
import { parseRecord } from '../../json-record.js';
import { CLONE_RECORD } from '../records.schema.js';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { CopperError, DriverError, NotFoundError, StateError, UsageError, errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import { AgentClient } from '../agent.js';
import { writeJsonAtomic } from '../json-file.js';
import { KeyedLock } from '../keyed-lock.js';
import { assertId, type Layout } from '../layout.js';
import { enableIgnoreShared, loadDeviceState } from '../migration.js';
import { processUsage, type ProcessUsage } from '../proc-usage.js';
import { createOverlay } from '../qemu-img.js';
import { resizeVcpus } from '../vcpu-hotplug.js';
import { growMemory } from '../mem-hotplug.js';
import { buildVmArgs, type VmConfig } from '../vm-args.js';
import { vmCgroupSpec } from '../vm-cgroup.js';
import { pidAlive, VmProcess, type VmLifetime } from '../vm-process.js';
import { giveApiSocket, giveCloneFiles } from '../vm-files.js';
import { readdirSafe, type SnapshotStore } from '../snapshots/store.js';
import type { SnapshotMeta } from '../snapshots/types.js';
import { cloneInit } from './identity.js';
import type { CloneRecord, CloneRef, CloneStartOptions, CloneTimings, LiveCloneAccess, RunningClone, VmChannels } from './types.js';

export interface ClonesOptions {
  layout: Layout;
  store: SnapshotStore;
  channels: VmChannels;
  /** 'job' (default): clones die with this process. 'detached': they survive it. */
  lifetime?: VmLifetime;
  /**
   * From spawn until the clone is ready (agent answering, vCPUs taken, clone-init done when it
   * runs in start()). Generous by default: 32 clones starting at once on 2 TCG cores took 40 s.
   */
  readyTimeoutMs?: number;
  /**
   * TCG translation cache per clone, MiB. QEMU's default reserves 1 GiB and a clone fills it
   * as it runs: a clone that only starts and runs `hostname` translates ~60 MiB of host code.
   * Measured, 8 clones at once each running `hostname`, two rounds in one run: 64 MiB ->
   * 72-73 MiB anonymous per clone, 11.5-12.5 s; 32 -> 43 MiB, 14.7-15.9 s (the cache is
   * flushed and refilled). Default 64, for speed; 0 means QEMU's default.
   */
  tcgTbMiB?: number;
}

export class Clones {
  private readonly clones = new Map<string, RunningClone>();
  private readonly lock = new KeyedLock();
  private readonly layout: Layout;
  private closed = false;

  constructor(private readonly o: ClonesOptions) {
    this.layout = o.layout;
  }

  async start(opts: CloneStartOptions): Promise<CloneRef> {
    assertId('clone', opts.cloneId);
    if (this.closed) throw new StateError('the driver is closed');
    if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})$/.test(opts.hostname)) throw new UsageError(`invalid hostname '${opts.hostname}'`);
    const meta = await this.o.store.meta(opts.snapshotId);
    const sp = this.layout.snapshot(opts.snapshotId);
    // QEMU would silently create a missing RAM file (zeroed memory): check all three first.
    for (const f of [sp.ramFile, sp.state, sp.disk]) {
      await stat(f).catch(() => {
        throw new NotFoundError(`snapshot '${opts.snapshotId}' is incomplete: ${f} is missing`);
      });
    }
    const cp = this.layout.clone(opts.cloneId);
    return this.lock.run(opts.cloneId, async () => {
      await mkdir(this.layout.clonesDir, { recursive: true });
      try {
        await mkdir(cp.stateDir, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new StateError(`clone '${opts.cloneId}' already exists`);
        throw err;
      }
      const handle: CloneRef = { cloneId: opts.cloneId, snapshotId: opts.snapshotId, headnode: meta.headnode };
      const t0 = performance.now();
      const marks: CloneTimings = {};
      const mark = (what: keyof CloneTimings): void => {
        marks[what] = Math.round((performance.now() - t0) * 10) / 10;
      };
      try {
        await mkdir(cp.dir, { recursive: true, mode: 0o700 });
        const rec: CloneRecord = { version: 1, ...handle, createdAt: Date.now() };
        await writeJsonAtomic(cp.record, rec);
        await createOverlay(cp.disk, sp.disk);
        const apiSocket = await this.o.channels.open({
          vmId: opts.cloneId,
          kind: 'clone',
          headnode: meta.headnode,
          owner: meta.owner,
          group: meta.group,
        });
        const cfg: VmConfig = {
          ...meta.vm,
          vmId: opts.cloneId,
          ramFile: sp.ramFile,
          ramShare: false, // MAP_PRIVATE: the frozen file is never written
          disk: cp.disk,
          qmpSocket: cp.qmp,
          qgaSocket: cp.qga,
          consoleSocket: cp.console,
          consoleLog: cp.consoleLog,
          apiSocket,
          incoming: true,
        };
        const tb = this.o.tcgTbMiB ?? 64;
        if (cfg.accel === 'tcg') {
          if (tb > 0) cfg.tcgTbMiB = tb;
          else delete cfg.tcgTbMiB;
        }
        if (cfg.clusterNic) cfg.clusterNic = opts.clusterNic ?? { kind: 'isolated', mac: cfg.clusterNic.mac };
        // QEMU runs as the snapshot's uid (its headnode's, vm-uid.ts): its files are given to it.
        await giveCloneFiles(this.layout, cp, cfg);
        mark('overlay');
        const vm = await VmProcess.spawn({
          vmId: opts.cloneId,
          args: buildVmArgs(cfg),
          lifetime: this.o.lifetime ?? 'job',
          uid: cfg.uid,
          cgroup: vmCgroupSpec(this.o.layout.stateDir, cfg),
          qmpSocket: cp.qmp,
          logFile: cp.qemuLog,
          pidFile: cp.pidFile,
        });
        // Connect while the state loads; the catch keeps an early failure from being "unhandled".
        const agentP = AgentClient.connect(cp.qga, { deadline: Date.now() + 10_000, isAlive: () => vm.isAlive() });
        agentP.catch(() => undefined);
        let agent: AgentClient | undefined;
        try {
          mark('qmp');
          await enableIgnoreShared(vm.qmp);
          await loadDeviceState(vm.qmp, sp.state);
          if (opts.clusterLinkDown === true && cfg.clusterNic) await vm.qmp.execute('set_link', { name: 'nic1', up: false });
          const vcpus = await resizeVcpus(vm.qmp, meta.vm.vcpus, meta.vm.maxVcpus ?? meta.vm.vcpus, vcpusFor(meta, opts.ncpus));
          const memory = await growMemory(vm.qmp, memoryLayout(meta), memFor(meta, opts.memMiB));
          mark('restored');
          await vm.qmp.execute('cont');
          mark('running');
          agent = await agentP;
          const live: RunningClone = { handle, paths: cp, vm, agent, execs: 0, destroyed: false, timings: marks };
          this.clones.set(opts.cloneId, live);
          const readyBy = Date.now() + (this.o.readyTimeoutMs ?? 180_000);
          await agent.waitReady(readyBy);
          mark('agent');
          try {
            // A guest that ignores CPU hotplug (an image without ACPI hotplug) must not hold a job for minutes.
            await vcpus.settled(Math.min(readyBy, Date.now() + 30_000));
          } catch (err) {
            // Fewer vCPUs is a courtesy to the host; more is what the job asked for.
            if (vcpus.added) throw err;
            log.warn(`clone ${opts.cloneId}: keeps ${meta.vm.vcpus} vCPUs: ${errorMessage(err)}`);
          }
          // The memory was asked for: a guest that does not take it fails the start.
          await memory.settled(Math.min(readyBy, Date.now() + 30_000));
          const init = opts.init ?? 'first-exec';
          if (init === 'clone-init') await cloneInit(agent, opts.hostname, Math.max(10_000, readyBy - Date.now()));
          else if (init === 'first-exec') live.pendingInit = opts.hostname;
          mark('ready');
          log.debug(`clone ${opts.cloneId} ready`, { at: marks });
        } catch (err) {
          agentP.then(
            (a) => a.destroy(),
            () => undefined,
          );
          if (!this.clones.has(opts.cloneId)) {
            await vm.kill();
          }
          throw err;
        }
        return handle;
      } catch (err) {
        await this.destroyNow(opts.cloneId);
        throw err instanceof CopperError ? err : new DriverError(`clone '${opts.cloneId}' failed: ${errorMessage(err)}`, { cause: err });
      }
    });
  }

  /** Run fn with a running clone under its lock (NotFoundError when it does not run here). */
  async withClone<T>(cloneId: string, fn: (c: LiveCloneAccess) => Promise<T>): Promise<T> {
    assertId('clone', cloneId);
    return this.lock.run(cloneId, async () => fn(this.running(cloneId)));
  }

  /** A running clone, not under its lock (a command runs alongside others); NotFoundError otherwise. */
  running(cloneId: string): RunningClone {
    const c = this.clones.get(cloneId);
    if (!c || c.destroyed) throw new NotFoundError(`no running clone '${cloneId}'`);
    return c;
  }

  /**
   * After a restart: take back a detached clone whose QEMU still runs (QMP, guest agent, API
   * channel). Undefined when it cannot be driven; the caller then destroys it.
   */
  async reattach(cloneId: string): Promise<CloneRef | undefined> {
    assertId('clone', cloneId);
    return this.lock.run(cloneId, async () => {
      const known = this.clones.get(cloneId);
      if (known) return known.handle;
      const cp = this.layout.clone(cloneId);
      let rec: CloneRecord;
      let meta: SnapshotMeta;
      try {
        rec = parseRecord(cp.record, 'clone record', await readFile(cp.record, 'utf8'), CLONE_RECORD);
        meta = await this.o.store.meta(rec.snapshotId);
      } catch (err) {
        log.warn(`clone ${cloneId}: not reattached: ${errorMessage(err)}`);
        return undefined;
      }
      const found = await VmProcess.reattach(cloneId, cp.pidFile, cp.qmp);
      if (!found.ok) {
        log.warn(`clone ${cloneId}: not reattached: ${found.reason}`);
        return undefined;
      }
      const vm = found.vm;
      let agent: AgentClient | undefined;
      try {
        agent = await AgentClient.connect(cp.qga, { deadline: Date.now() + 5000, isAlive: () => vm.isAlive() });
        await agent.waitReady(Date.now() + 15_000);
        const apiSocket = await this.o.channels.open({ vmId: cloneId, kind: 'clone', headnode: meta.headnode, owner: meta.owner, group: meta.group });
        await giveApiSocket({ apiSocket, uid: meta.vm.uid }); // a new socket: the running QEMU's uid must reach it again
      } catch (err) {
        agent?.destroy();
        vm.qmp.destroy();
        log.warn(`clone ${cloneId}: not reattached: ${errorMessage(err)}`);
        return undefined;
      }
      const handle: CloneRef = { cloneId, snapshotId: rec.snapshotId, headnode: rec.headnode };
      this.clones.set(cloneId, { handle, paths: cp, vm, agent, execs: 0, destroyed: false, timings: {} });
      return handle;
    });
  }

  /** Let go of every clone without killing it (detached clones outlive this process). */
  async detach(): Promise<void> {
    this.closed = true;
    for (const [id, c] of [...this.clones]) {
      await this.lock.run(id, async () => {
        c.agent.destroy();
        c.vm.qmp.destroy();
        this.clones.delete(id);
      });
    }
  }

  async destroy(cloneId: string): Promise<void> {
    assertId('clone', cloneId);
    await this.lock.run(cloneId, () => this.destroyNow(cloneId));
  }

  /** Destroy every clone not in `keep`, running or left on disk; returns their ids. */
  async sweep(keep: ReadonlySet<string>): Promise<string[]> {
    const ids = new Set<string>([...this.clones.keys()]);
    for (const id of await readdirSafe(this.layout.clonesDir)) ids.add(id);
    for (const id of await readdirSafe(`${this.layout.runDir}/c`)) ids.add(id);
    const swept: string[] = [];
    for (const id of [...ids].sort()) {
      if (keep.has(id)) continue;
      try {
        assertId('clone', id);
      } catch {
        continue; // not a name we create
      }
      await this.destroy(id);
      swept.push(id);
    }
    return swept;
  }

  /** Destroys every clone. */
  async close(): Promise<void> {
    this.closed = true;
    for (const id of [...this.clones.keys()]) await this.destroy(id);
  }

  /** CPU time and peak RSS of the clone's QEMU process. */
  async usage(cloneId: string): Promise<ProcessUsage | undefined> {
    const c = this.clones.get(cloneId);
    if (!c) return undefined;
    return processUsage(c.vm.pid);
  }

  /** The running clone's QEMU pid (for tests and diagnostics). */
  pid(cloneId: string): number | undefined {
    return this.clones.get(cloneId)?.vm.pid;
  }

  /** How long each step of the clone's start took. */
  timings(cloneId: string): Readonly<CloneTimings> | undefined {
    return this.clones.get(cloneId)?.timings;
  }

  /** Kill the clone's QEMU and delete all its files; idempotent. Caller holds the clone lock. */
  private async destroyNow(cloneId: string): Promise<void> {
    const cp = this.layout.clone(cloneId);
    const c = this.clones.get(cloneId);
    if (c) {
      c.destroyed = true;
      c.agent.destroy();
      await c.vm.kill('SIGKILL');
      this.clones.delete(cloneId);
    } else {
      await killByPidFile(cp.pidFile, cloneId);
    }
    await this.o.channels.close(cloneId).catch((err: unknown) => log.warn(`closing channel of clone ${cloneId}: ${errorMessage(err)}`));
    await rm(cp.dir, { recursive: true, force: true });
    await rm(cp.stateDir, { recursive: true, force: true });
  }
}

/**
 * How many vCPUs a clone gets: what was asked, or the snapshot's. A snapshot from before
 * vCPU slots (no maxVcpus in its meta) cannot grow: a job queued then asking for more gets
 * what it can have rather than failing.
 */
function vcpusFor(meta: SnapshotMeta, ncpus: number | undefined): number {
  if (ncpus === undefined) return meta.vm.vcpus;
  if (meta.vm.maxVcpus === undefined && ncpus > meta.vm.vcpus) {
    log.warn(`snapshot ${meta.id} has no free vCPU slots: a clone gets ${meta.vm.vcpus} vCPUs, not ${ncpus}`);
    return meta.vm.vcpus;
  }
  return ncpus;
}

/** The -m layout the snapshot's clones can grow in (none: no slots, memMiB is the most). */
function memoryLayout(meta: SnapshotMeta): { memMiB: number; slots: number; maxMemMiB: number } {
  return { memMiB: meta.vm.memMiB, slots: meta.vm.memSlots ?? 0, maxMemMiB: meta.vm.maxMemMiB ?? meta.vm.memMiB };
}

/**
 * How much RAM a clone gets: what was asked when more than the snapshot's, else the
 * snapshot's. A snapshot from before memory slots (no maxMemMiB in its meta) cannot grow: a
 * job queued then asking for more gets what it can have rather than failing (the submission
 * refuses such requests, so only old queued jobs meet this).
 */
function memFor(meta: SnapshotMeta, memMiB: number | undefined): number {
  if (memMiB === undefined || memMiB <= meta.vm.memMiB) return meta.vm.memMiB;
  if (meta.vm.maxMemMiB === undefined || meta.vm.memSlots === undefined) {
    log.warn(`snapshot ${meta.id} has no memory slots: a clone gets ${meta.vm.memMiB} MiB, not ${memMiB}`);
    return meta.vm.memMiB;
  }
  return memMiB;
}

/** Kill a clone QEMU that is not (or no longer) ours, e.g. after a restart. */
async function killByPidFile(pidFile: string, vmId: string): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt(await readFile(pidFile, 'utf8'), 10);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || !pidAlive(pid, vmId)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 100 && pidAlive(pid, vmId); i++) await sleep(50);
}
