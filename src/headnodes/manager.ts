/**
 * QemuHeadnodeManager: the lifecycle of users' headnodes (create, start, stop, destroy,
 * list, reattach after a gcd restart). Headnode QEMUs are detached processes: they outlive
 * gcd, and `reattach()` finds them again through their pid files.
 *
 * The VM floor's snapshots (src/vm/snapshots) borrow running headnodes through
 * `withRunning()` (under the same per-headnode lock, so a snapshot never overlaps a stop or
 * destroy). Spec checks, boot files and the QEMU configuration are in spec.ts.
 *
 * Over 400 lines on purpose: one class whose methods share the per-headnode lock and the map
 * of live QEMUs; splitting it would pass that private state between files.
 */
import { access, mkdir, readFile, readdir, rm, truncate } from 'node:fs/promises';
import { settings as envSettings, type Settings } from '../config/settings.js';
import { DriverError, NotFoundError, StateError, UsageError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { detectAccel } from '../vm/accel.js';
import { AgentClient } from '../vm/agent.js';
import { activeNode } from '../vm/disk-chain.js';
import { Layout, type HeadnodePaths } from '../vm/layout.js';
import { createOverlay, imageInfo } from '../vm/qemu-img.js';
import { buildVmArgs, type VmConfig } from '../vm/vm-args.js';
import { VmProcess } from '../vm/vm-process.js';
import { KeyedLock } from '../vm/keyed-lock.js';
import type { RunningVm } from '../vm/snapshots/types.js';
import { writeJsonAtomic } from '../vm/json-file.js';
import { ensurePrivateDir } from '../vm/private-dir.js';
import { assertSelfContainedImage } from '../vm/image-trust.js';
import { latestGeneration, pruneGenerations } from '../vm/disk-generations.js';
import { incarnationOf, newIncarnation } from './incarnation.js';
import { checkHeadnodeDisk, type HeadnodeDiskLimit } from './disk-quota.js';
import { readRecord, type HeadnodeRecord } from './record.js';
import { SharedVolumes } from '../vm/shared-volumes.js';
import { vmCgroupSpec } from '../vm/vm-cgroup.js';
import { giveApiSocket, giveHeadnodeFiles } from '../vm/vm-files.js';
import { pickVmUid, takenVmUids, vmDirMode, vmUidsEnabled } from '../vm/vm-uid.js';
import { installSshKeys, pickSshPort, portFree, sshAccessInfo, type SshSettings } from './ssh-access.js';
import { parseSshKey } from './ssh-keys.js';
import { bootFiles, defaultMaxMemMiB, headnodeVmConfig, maxMemFor, validateSpec, DEFAULT_MAX_VCPUS, NAME_RE, type ImageSource } from './spec.js';

export { DEFAULT_MAX_VCPUS, type ImageSource };
import type { Accel, GuestChannels, GuestIdentity, HeadnodeInfo, HeadnodeManager, HeadnodeSpec, HeadnodeState } from './types.js';

export interface ManagerOptions {
  /** sshAddr/sshPorts: the headnodes' SSH ports (ssh-access.ts); without sshAddr, none. */
  settings: Pick<Settings, 'stateDir' | 'ramDir'> & Partial<Pick<Settings, 'sshAddr' | 'sshPorts'>>;
  channels: GuestChannels;
  images: ImageSource;
  /** Which accelerator to start with; default detectAccel(). */
  accel?: () => Accel;
  /** Time from spawn until the guest agent must answer (a TCG boot takes ~20 s). */
  bootTimeoutMs?: number;
  /** Time a guest gets to power off before it is killed. */
  stopTimeoutMs?: number;
  /** TCG translation cache of a headnode, MiB (QEMU's default reserves 1 GiB). Default 256; 0: QEMU's. */
  tcgTbMiB?: number;
  /** What the host may give clones at once, MiB: new headnodes' default maxMemMiB. Default GC_CAPACITY_MEM_MIB. */
  capacityMemMiB?: number;
  /** Owners' /shared volumes and their sftp gate; default: without quotas. */
  shared?: SharedVolumes;
  /** quotas.yaml headnode_disk_bytes of an owner (disk-quota.ts); default: none. */
  diskLimit?: HeadnodeDiskLimit;
}

/** A running headnode as the VM floor sees it (vm/snapshots freezes it). */
export interface LiveHeadnode extends RunningVm {
  readonly spec: HeadnodeSpec;
}

interface Live {
  state: 'starting' | 'running';
  vm: VmProcess;
  agent: AgentClient | undefined;
  config: VmConfig;
  /** Set while gcd itself stops the VM: its exit is then not a crash. */
  stopping: boolean;
}

export class QemuHeadnodeManager implements HeadnodeManager {
  readonly layout: Layout;
  private readonly live = new Map<string, Live>();
  private readonly lock = new KeyedLock();
  /** Per owner, around create: two creates of one owner cannot both pass headnode_disk_bytes. */
  private readonly ownerLock = new KeyedLock();
  private readonly accel: () => Accel;
  private readonly bootTimeoutMs: number;
  private readonly stopTimeoutMs: number;
  private readonly shared: SharedVolumes;
  /** VM uids picked for records not written yet (vm-uid.ts). */
  private readonly reservedUids = new Set<number>();

  constructor(private readonly opts: ManagerOptions) {
    this.layout = new Layout(opts.settings);
    this.accel = opts.accel ?? (() => detectAccel());
    this.bootTimeoutMs = opts.bootTimeoutMs ?? 180_000;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 30_000;
    this.shared = opts.shared ?? new SharedVolumes({ stateDir: opts.settings.stateDir, maxSessions: envSettings().sharedMaxSessions });
  }

  async create(spec: HeadnodeSpec): Promise<HeadnodeInfo> {
    validateSpec(spec);
    (spec.sshKeys ?? []).forEach((k, i) => parseSshKey(k, `SSH key ${i + 1}`));
    return this.ownerLock.run(spec.owner, () => this.createLocked(spec));
  }

  private async createLocked(spec: HeadnodeSpec): Promise<HeadnodeInfo> {
    return this.lock.run(spec.name, async () => {
      const paths = this.layout.headnode(spec.name);
      await mkdir(this.layout.headnodesDir, { recursive: true });
      try {
        await mkdir(paths.stateDir, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new StateError(`headnode '${spec.name}' already exists`);
        throw err;
      }
      try {
        // Before any disk, record or port is made (the folder goes with a refusal, below).
        checkHeadnodeDisk(this.opts.diskLimit?.(spec.owner), await this.list(), spec);
        const boot = await bootFiles(spec, this.opts.images);
        const base = await imageInfo(boot.base);
        if (base.format !== 'qcow2') throw new UsageError(`image ${boot.base} is ${base.format}, not qcow2`);
        const size = spec.diskGiB * 1024 ** 3;
        if (size < base.virtualSize) {
          throw new UsageError(`diskGiB ${spec.diskGiB} is smaller than the image (${(base.virtualSize / 1024 ** 3).toFixed(1)} GiB)`);
        }
        await createOverlay(paths.disk(0), boot.base, size);
        const vmUid = await this.reserveVmUid();
        const rec: HeadnodeRecord = {
          version: 1,
          spec: {
            ...spec,
            maxVcpus: spec.maxVcpus ?? Math.max(spec.vcpus, DEFAULT_MAX_VCPUS),
            maxMemMiB: spec.maxMemMiB !== undefined ? maxMemFor(spec.memMiB, spec.maxMemMiB) : this.defaultMaxMem(spec.memMiB),
          },
          createdAt: Date.now(),
          incarnation: newIncarnation(),
          boot,
          diskGen: 0,
          want: 'stopped',
          ...(vmUid !== undefined ? { vmUid } : {}),
        };
        try {
          const port = await this.newSshPort(spec.name);
          if (port !== undefined) rec.sshPort = port;
          // The record is written last: a folder without one is a create that did not finish.
          await writeJsonAtomic(paths.record, rec);
        } finally {
          if (vmUid !== undefined) this.reservedUids.delete(vmUid); // recorded, or never will be
        }
        return this.info(rec);
      } catch (err) {
        await rm(paths.stateDir, { recursive: true, force: true });
        throw err;
      }
    });
  }

  async start(name: string): Promise<HeadnodeInfo> {
    const paths = this.layout.headnode(name);
    return this.lock.run(name, async () => {
      const rec = await readRecord(paths.record, name);
      if (this.live.has(name)) return this.info(rec);
      await this.boot(rec, paths);
      return this.info(await readRecord(paths.record, name));
    });
  }

  async stop(name: string): Promise<HeadnodeInfo> {
    const paths = this.layout.headnode(name);
    return this.lock.run(name, async () => {
      const rec = await readRecord(paths.record, name);
      await this.halt(name, paths, true);
      rec.want = 'stopped';
      delete rec.startedAt;
      delete rec.crash;
      await writeJsonAtomic(paths.record, rec);
      return this.info(rec);
    });
  }

  async destroy(name: string): Promise<void> {
    const paths = this.layout.headnode(name);
    await this.lock.run(name, async () => {
      await readRecord(paths.record, name); // NotFoundError for unknown names
      await this.halt(name, paths, false);
      await rm(paths.stateDir, { recursive: true, force: true });
    });
  }

  async list(): Promise<HeadnodeInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.layout.headnodesDir);
    } catch {
      return [];
    }
    const out: HeadnodeInfo[] = [];
    for (const name of names.sort()) {
      if (!NAME_RE.test(name)) continue;
      try {
        out.push(this.info(await readRecord(this.layout.headnode(name).record, name)));
      } catch (err) {
        if (!(err instanceof NotFoundError)) log.warn(`headnode ${name}: ${errorMessage(err)}`);
      }
    }
    return out;
  }

  async get(name: string): Promise<HeadnodeInfo> {
    return this.info(await readRecord(this.layout.headnode(name).record, name));
  }

  /** Find headnodes that kept running while gcd was down; mark the dead ones crashed. */
  async reattach(): Promise<void> {
    await this.shared.open();
    let names: string[];
    try {
      names = await readdir(this.layout.headnodesDir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!NAME_RE.test(name)) continue;
      const paths = this.layout.headnode(name);
      await this.lock.run(name, async () => {
        let rec: HeadnodeRecord;
        try {
          rec = await readRecord(paths.record, name);
        } catch {
          return;
        }
        if (rec.want !== 'running' || this.live.has(name)) return;
        const found = await VmProcess.reattach(name, paths.pidFile, paths.qmp);
        if (!found.ok) {
          if (found.pid !== undefined) {
            // Alive but deaf: gcd cannot drive it, and it holds RAM. Kill it, say so.
            try {
              process.kill(found.pid, 'SIGKILL');
            } catch {
              // gone meanwhile
            }
          }
          rec.crash = { reason: `found dead after a gcd restart: ${found.reason}`, at: Date.now() };
          await writeJsonAtomic(paths.record, rec);
          await this.removeRuntimeFiles(paths);
          log.warn(`headnode ${name} crashed: ${rec.crash.reason}`);
          return;
        }
        const vm = found.vm;
        await this.repairAfterCrash(name, rec, paths, vm);
        const apiSocket = await this.opts.channels.open(this.identity(rec.spec));
        const config = this.configOf(rec, paths, rec.accel ?? this.accel(), apiSocket);
        await giveApiSocket(config); // a new socket: the running QEMU's uid must reach it again
        const live: Live = { state: 'running', vm, agent: undefined, config, stopping: false };
        this.live.set(name, live);
        this.watchExit(name, paths, live);
        try {
          live.agent = await AgentClient.connect(paths.qga, { deadline: Date.now() + 5000, isAlive: () => vm.isAlive() });
        } catch (err) {
          log.warn(`headnode ${name}: guest agent channel not reopened: ${errorMessage(err)}`);
        }
        log.info(`headnode ${name} reattached (pid ${vm.pid})`);
      });
    }
  }

  /**
   * gcd may have died in the middle of a snapshot: the headnode can be left paused (or in a
   * migration), and writing to an overlay generation the record does not know yet. QEMU is
   * the truth for both.
   */
  private async repairAfterCrash(name: string, rec: HeadnodeRecord, paths: HeadnodePaths, vm: VmProcess): Promise<void> {
    try {
      const { file } = await activeNode(vm.qmp);
      const m = /\/disk-(\d+)\.qcow2$/.exec(file);
      if (m && Number(m[1]) !== rec.diskGen) {
        log.warn(`headnode ${name}: QEMU writes to ${file}, the record said disk-${rec.diskGen}; record fixed`);
        rec.diskGen = Number(m[1]);
        await writeJsonAtomic(paths.record, rec);
      }
      const mig = await vm.qmp.execute<{ status?: string }>('query-migrate');
      if (mig.status === 'active' || mig.status === 'setup') await vm.qmp.execute('migrate_cancel');
      const st = await vm.qmp.execute<{ running: boolean; status: string }>('query-status');
      if (!st.running && ['paused', 'postmigrate', 'finish-migrate'].includes(st.status)) {
        log.warn(`headnode ${name} was left ${st.status} by an interrupted snapshot; resuming it`);
        await vm.qmp.execute('cont');
      }
    } catch (err) {
      log.warn(`headnode ${name}: checking its state after a restart failed: ${errorMessage(err)}`);
    }
  }

  /** Let go of the headnodes without stopping them (they survive gcd). */
  async close(): Promise<void> {
    await this.shared.close();
    for (const [, l] of this.live) {
      l.stopping = true; // our QMP/agent connections close; that is not a crash
      l.agent?.destroy();
      await l.vm.qmp.close().catch(() => undefined);
    }
    this.live.clear();
  }

  /**
   * Run fn with a running headnode, holding its lock (no start/stop/destroy/snapshot overlaps).
   * NotFoundError for an unknown name, StateError when it is not running.
   */
  async withRunning<T>(name: string, fn: (h: LiveHeadnode) => Promise<T>): Promise<T> {
    const paths = this.layout.headnode(name);
    return this.lock.run(name, async () => {
      const rec = await readRecord(paths.record, name);
      const l = this.live.get(name);
      if (!l || l.state !== 'running' || !l.vm.isAlive()) {
        throw new StateError(`headnode '${name}' is ${this.info(rec).state}, not running`);
      }
      if (!l.agent || l.agent.isClosed) {
        l.agent = await AgentClient.connect(paths.qga, { deadline: Date.now() + 5000, isAlive: () => l.vm.isAlive() });
      }
      const agent = l.agent;
      const h: LiveHeadnode = {
        name,
        spec: rec.spec,
        paths,
        vm: l.vm,
        agent,
        config: l.config,
        diskGen: rec.diskGen,
        incarnation: incarnationOf(rec),
        setDiskGen: async (gen: number) => {
          rec.diskGen = gen;
          l.config = { ...l.config, disk: paths.disk(gen) };
          await writeJsonAtomic(paths.record, rec);
        },
      };
      return fn(h);
    });
  }

  /** The spec of a headnode (owner, group) without requiring it to run. */
  async spec(name: string): Promise<HeadnodeSpec> {
    return (await readRecord(this.layout.headnode(name).record, name)).spec;
  }

  private identity(spec: HeadnodeSpec): GuestIdentity {
    return { vmId: spec.name, kind: 'headnode', headnode: spec.name, owner: spec.owner, group: spec.group };
  }

  private configOf(rec: HeadnodeRecord, paths: HeadnodePaths, accel: Accel, apiSocket: string): VmConfig {
    const cfg = headnodeVmConfig(rec, paths, accel, apiSocket, this.layout.shared(rec.spec.owner), this.opts.tcgTbMiB);
    const ssh = this.sshSettings();
    if (ssh.addr !== undefined && rec.sshPort !== undefined) cfg.sshForward = { addr: ssh.addr, port: rec.sshPort };
    if (rec.vmUid !== undefined && vmUidsEnabled()) cfg.uid = rec.vmUid;
    return cfg;
  }

  private sshSettings(): SshSettings {
    return { addr: this.opts.settings.sshAddr, ports: this.opts.settings.sshPorts ?? { first: 2200, last: 2999 } };
  }

  /** A port no other headnode of this state folder has (under one lock: two creates never share one). */
  private async newSshPort(except: string): Promise<number | undefined> {
    const ssh = this.sshSettings();
    const addr = ssh.addr;
    if (addr === undefined) return undefined;
    return this.lock.run('#ssh-ports', async () => {
      const taken = new Set<number>();
      for (const name of await readdir(this.layout.headnodesDir).catch(() => [] as string[])) {
        if (name === except || !NAME_RE.test(name)) continue;
        const other = await readRecord(this.layout.headnode(name).record, name).catch(() => undefined);
        if (other?.sshPort !== undefined) taken.add(other.sshPort);
      }
      return pickSshPort({ ...ssh, addr }, taken);
    });
  }

  /**
   * Before a boot: a headnode created while GC_SSH_ADDR was unset gets its port now; one whose
   * port another program took meanwhile gets a new one (said in the log), rather than a QEMU
   * that cannot start.
   */
  private async checkSshPort(rec: HeadnodeRecord, paths: HeadnodePaths): Promise<void> {
    const addr = this.sshSettings().addr;
    if (addr === undefined) return;
    if (rec.sshPort !== undefined && (await portFree(addr, rec.sshPort))) return;
    const old = rec.sshPort;
    const port = await this.newSshPort(rec.spec.name);
    if (port === undefined) return;
    if (old !== undefined) log.warn(`headnode ${rec.spec.name}: SSH port ${addr}:${old} is taken by another program; it now has ${port}`);
    rec.sshPort = port;
    await writeJsonAtomic(paths.record, rec);
  }

  /** Write the record's SSH keys into the running guest; keep the host key it reports. */
  private async pushSshKeys(rec: HeadnodeRecord, paths: HeadnodePaths, agent: AgentClient): Promise<void> {
    try {
      const hostKey = await installSshKeys(agent, rec.spec.owner, rec.spec.sshKeys ?? []);
      if (hostKey !== undefined && hostKey !== rec.sshHostKey) {
        rec.sshHostKey = hostKey;
        await writeJsonAtomic(paths.record, rec);
      }
    } catch (err) {
      // An image of the user's own may have no sshd: the headnode is still usable.
      log.warn(`headnode ${rec.spec.name}: SSH keys not installed: ${errorMessage(err)}`);
    }
  }

  async setSshKeys(name: string, update: (keys: readonly string[]) => string[]): Promise<HeadnodeInfo> {
    const paths = this.layout.headnode(name);
    return this.lock.run(name, async () => {
      const rec = await readRecord(paths.record, name);
      const keys = update(rec.spec.sshKeys ?? []);
      keys.forEach((k, i) => parseSshKey(k, `SSH key ${i + 1}`));
      rec.spec.sshKeys = keys;
      await writeJsonAtomic(paths.record, rec);
      const l = this.live.get(name);
      if (l && l.state === 'running' && l.vm.isAlive()) {
        if (!l.agent || l.agent.isClosed) l.agent = await AgentClient.connect(paths.qga, { deadline: Date.now() + 5000, isAlive: () => l.vm.isAlive() });
        const hostKey = await installSshKeys(l.agent, rec.spec.owner, keys);
        if (hostKey !== undefined && hostKey !== rec.sshHostKey) {
          rec.sshHostKey = hostKey;
          await writeJsonAtomic(paths.record, rec);
        }
      }
      return this.info(rec);
    });
  }

  /**
   * A uid of its own for a new headnode (vm-uid.ts), none other in this state folder holds or
   * is being given; undefined when gcd is not root. Released by the caller once recorded.
   */
  private async reserveVmUid(): Promise<number | undefined> {
    if (!vmUidsEnabled()) return undefined;
    return this.lock.run('#vm-uids', async () => {
      const taken = await takenVmUids(this.opts.settings.stateDir);
      for (const u of this.reservedUids) taken.add(u);
      const uid = pickVmUid(taken);
      this.reservedUids.add(uid);
      return uid;
    });
  }

  /** maxMemMiB of a headnode created without --max-mem. */
  private defaultMaxMem(memMiB: number): number {
    return defaultMaxMemMiB(memMiB, this.opts.capacityMemMiB ?? envSettings().capacityMemMiB);
  }

  private async boot(rec: HeadnodeRecord, paths: HeadnodePaths): Promise<void> {
    const name = rec.spec.name;
    if (rec.spec.maxMemMiB === undefined) {
      // Created before memory hot-plug: a fresh boot may take slots (a running one keeps its layout).
      rec.spec.maxMemMiB = this.defaultMaxMem(rec.spec.memMiB);
      await writeJsonAtomic(paths.record, rec);
    }
    await access(rec.boot.base).catch(() => {
      throw new DriverError(`headnode '${name}': its base image ${rec.boot.base} is missing`);
    });
    // A user's image may have been rewritten since create: checked again at every boot.
    if (rec.spec.image !== undefined) await assertSelfContainedImage(rec.boot.base);
    const latest = await latestGeneration(paths, rec.diskGen);
    if (latest !== rec.diskGen) {
      log.warn(`headnode ${name}: record says disk-${rec.diskGen}, but disk-${latest} is newer (gcd died mid-snapshot); using it`);
      rec.diskGen = latest;
      await writeJsonAtomic(paths.record, rec);
    }
    await access(paths.disk(rec.diskGen)).catch(() => {
      throw new DriverError(`headnode '${name}': its disk ${paths.disk(rec.diskGen)} is missing`);
    });
    await pruneGenerations(paths, rec.diskGen);
    await this.removeRuntimeFiles(paths);
    await mkdir(paths.dir, { recursive: true, mode: 0o700 });
    await ensurePrivateDir(this.layout.ramHeadnodesDir, vmDirMode());
    await truncate(paths.consoleLog).catch(() => undefined);
    if (rec.vmUid === undefined && vmUidsEnabled()) {
      // Created before VM uids: it gets its own now (its snapshots from before keep running as root).
      const uid = await this.reserveVmUid();
      rec.vmUid = uid;
      try {
        await writeJsonAtomic(paths.record, rec);
      } finally {
        if (uid !== undefined) this.reservedUids.delete(uid);
      }
    }

    // The owner's shared volume: root-only on the host, its quota mounted, served to the guest
    // by gcd's sftp gate (vm/shared-volumes.ts); clones get the same folder (snapshot meta).
    await this.shared.prepare(rec.spec.owner, rec.vmUid);
    await this.checkSshPort(rec, paths);
    const accel = this.accel();
    const apiSocket = await this.opts.channels.open(this.identity(rec.spec));
    const config = this.configOf(rec, paths, accel, apiSocket);
    // Everything QEMU opens after start, given to the headnode's uid (vm/vm-uid.ts).
    await giveHeadnodeFiles(this.layout, paths, rec.diskGen, config);
    let vm: VmProcess | undefined;
    try {
      vm = await VmProcess.spawn({
        vmId: name,
        args: buildVmArgs(config),
        lifetime: 'detached',
        uid: config.uid,
        cgroup: vmCgroupSpec(this.opts.settings.stateDir, config),
        qmpSocket: paths.qmp,
        logFile: paths.qemuLog,
        pidFile: paths.pidFile,
      });
      const live: Live = { state: 'starting', vm, agent: undefined, config, stopping: false };
      this.live.set(name, live);
      rec.want = 'running';
      rec.accel = accel;
      rec.startedAt = Date.now();
      delete rec.crash;
      await writeJsonAtomic(paths.record, rec);
      this.watchExit(name, paths, live);
      const running = vm;
      live.agent = await AgentClient.connect(paths.qga, { deadline: Date.now() + 10_000, isAlive: () => running.isAlive() });
      await Promise.race([
        live.agent.waitReady(Date.now() + this.bootTimeoutMs),
        running.exited.then(() => {
          throw new DriverError(`QEMU ${running.describeExit()} during boot`);
        }),
      ]);
      live.state = 'running';
      await this.pushSshKeys(rec, paths, live.agent);
    } catch (err) {
      const live = this.live.get(name);
      if (live) live.stopping = true;
      this.live.delete(name);
      live?.agent?.destroy();
      await vm?.kill('SIGKILL');
      await this.opts.channels.close(name).catch(() => undefined);
      await this.removeRuntimeFiles(paths);
      const console = await tail(paths.consoleLog);
      const reason = `failed to start: ${errorMessage(err)}`;
      rec.want = 'stopped';
      delete rec.startedAt;
      rec.crash = { reason, at: Date.now() };
      await writeJsonAtomic(paths.record, rec).catch(() => undefined);
      throw new DriverError(`headnode '${name}' ${reason}${console ? ` — console: ${console}` : ''}`, { cause: err });
    }
  }

  /** Stop the VM if it runs (gracefully when asked), then remove its runtime files. */
  private async halt(name: string, paths: HeadnodePaths, graceful: boolean): Promise<void> {
    const l = this.live.get(name);
    if (l) {
      l.stopping = true;
      if (graceful && l.vm.isAlive()) await this.powerOff(name, l);
      l.agent?.destroy();
      await l.vm.kill('SIGTERM', 5000);
      this.live.delete(name);
    } else {
      // Not ours (gcd restarted and reattach did not run) but maybe alive: never leave it behind.
      const found = await VmProcess.reattach(name, paths.pidFile, paths.qmp, 2000);
      if (found.ok) await found.vm.kill('SIGTERM', 5000);
      else if (found.pid !== undefined) {
        try {
          process.kill(found.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    await this.opts.channels.close(name).catch((err: unknown) => log.warn(`closing channel of ${name}: ${errorMessage(err)}`));
    await this.removeRuntimeFiles(paths);
  }

  /** Ask the guest to power off (its init syncs and unmounts) and wait for QEMU to exit. */
  private async powerOff(name: string, l: Live): Promise<void> {
    try {
      if (l.agent && !l.agent.isClosed) {
        // guest-shutdown sends no reply on success: do not wait for one.
        l.agent.request('guest-shutdown', { mode: 'powerdown' }, 2000).catch(() => undefined);
      } else {
        await l.vm.qmp.execute('system_powerdown');
      }
    } catch (err) {
      log.warn(`headnode ${name}: power-off request failed: ${errorMessage(err)}`);
    }
    const exited = await l.vm.waitExit(this.stopTimeoutMs);
    if (!exited) log.warn(`headnode ${name} did not power off within ${this.stopTimeoutMs} ms; killing it`);
  }

  private watchExit(name: string, paths: HeadnodePaths, live: Live): void {
    void live.vm.exited.then(async () => {
      if (live.stopping || this.live.get(name) !== live) return;
      this.live.delete(name);
      live.agent?.destroy();
      const reason = `QEMU ${live.vm.describeExit()}${await live.vm.logTail().then((t) => (t ? `: ${t}` : ''))}`;
      log.warn(`headnode ${name} crashed: ${reason}`);
      await this.lock.run(name, async () => {
        try {
          const rec = await readRecord(paths.record, name);
          rec.crash = { reason, at: Date.now() };
          await writeJsonAtomic(paths.record, rec);
        } catch {
          // destroyed meanwhile
        }
        await this.opts.channels.close(name).catch(() => undefined);
        await this.removeRuntimeFiles(paths);
      });
    });
  }

  private async removeRuntimeFiles(paths: HeadnodePaths): Promise<void> {
    await rm(paths.ramFile, { force: true });
    await rm(paths.dir, { recursive: true, force: true });
    await rm(paths.pidFile, { force: true });
  }

  private info(rec: HeadnodeRecord): HeadnodeInfo {
    const l = this.live.get(rec.spec.name);
    let state: HeadnodeState;
    if (l) state = l.state;
    else state = rec.want === 'running' ? 'crashed' : 'stopped';
    const info: HeadnodeInfo = {
      ...rec.spec,
      state,
      accel: l?.config.accel ?? rec.accel ?? this.accel(),
      createdAt: rec.createdAt,
      incarnation: incarnationOf(rec),
    };
    if (l) info.pid = l.vm.pid;
    if (l && rec.startedAt !== undefined) info.startedAt = rec.startedAt;
    if (rec.crash && !l) info.reason = rec.crash.reason;
    info.ssh = sshAccessInfo(this.sshSettings(), rec);
    return info;
  }
}

async function tail(path: string, max = 800): Promise<string> {
  try {
    const t = (await readFile(path, 'utf8')).trim();
    return t.length > max ? '…' + t.slice(-max) : t;
  } catch {
    return '';
  }
}
