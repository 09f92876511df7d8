import { expect } from 'chai';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverError, UsageError } from '../../src/errors.js';
import { defaultMaxMemMiB, headnodeVmConfig, validateSpec } from '../../src/headnodes/spec.js';
import type { HeadnodeRecord } from '../../src/headnodes/record.js';
import { Layout } from '../../src/vm/layout.js';
import { growMemory, planDimms } from '../../src/vm/mem-hotplug.js';
import { QmpClient } from '../../src/vm/qmp.js';
import { frozenVm } from '../../src/vm/snapshots/types.js';
import { buildVmArgs, type VmConfig } from '../../src/vm/vm-args.js';

/**
 * A monitor of a paused clone started with `-m 512M,slots=N,maxmem=M`: it records object-add /
 * device_add, refuses a device_add whose memdev was never added (as QEMU does), and answers
 * each plugged DIMM with the _OST events `answer` gives (the guest's side, after `cont`).
 */
interface Monitor {
  server: Server;
  calls: Array<{ execute: string; arguments?: Record<string, unknown> }>;
}

function monitor(path: string, answer: (slot: number) => number[]): Promise<Monitor> {
  const calls: Monitor['calls'] = [];
  const server = createServer((s: Socket) => {
    s.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + '\r\n');
    const objects = new Set<string>();
    let slots = 0;
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id?: string; arguments?: Record<string, unknown> };
        buf = buf.slice(nl + 1);
        calls.push({ execute: msg.execute, ...(msg.arguments ? { arguments: msg.arguments } : {}) });
        const reply = (body: unknown): void => void s.write(JSON.stringify({ return: body, id: msg.id }) + '\r\n');
        const error = (desc: string): void => void s.write(JSON.stringify({ error: { class: 'GenericError', desc }, id: msg.id }) + '\r\n');
        switch (msg.execute) {
          case 'qmp_capabilities':
            reply({});
            break;
          case 'object-add':
            objects.add(String(msg.arguments?.id));
            reply({});
            break;
          case 'device_add': {
            if (!objects.has(String(msg.arguments?.memdev))) {
              error(`can't find object '${String(msg.arguments?.memdev)}'`);
              break;
            }
            reply({});
            const slot = slots++;
            setTimeout(() => {
              for (const status of answer(slot)) {
                s.write(JSON.stringify({ event: 'ACPI_DEVICE_OST', data: { info: { device: `dimm${slot}`, slot: String(slot), 'slot-type': 'DIMM', source: 1, status } } }) + '\r\n');
              }
            }, 5);
            break;
          }
          default:
            error(`The command ${msg.execute} has not been found`);
        }
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve({ server, calls })));
}

const LAYOUT = { memMiB: 512, slots: 8, maxMemMiB: 16_384 + 512 };

describe('hot-plugging a clone\'s memory (-l mem)', () => {
  describe('planDimms', () => {
    it('adds nothing when the snapshot has enough, and never takes forked memory away', () => {
      expect(planDimms(LAYOUT, 512)).to.deep.equal([]);
      expect(planDimms(LAYOUT, 256)).to.deep.equal([]);
    });

    it('plugs the difference in whole 128 MiB guest memory blocks', () => {
      expect(planDimms(LAYOUT, 2048)).to.deep.equal([1536]);
      expect(planDimms(LAYOUT, 2000)).to.deep.equal([1536]); // 1488 rounded up
      expect(planDimms(LAYOUT, 513)).to.deep.equal([128]);
    });

    it('grows geometrically so that each DIMM\'s page tables fit in what the guest has online', () => {
      const sizes = planDimms(LAYOUT, 16_384);
      expect(sizes).to.deep.equal([2048, 10_240, 3584]);
      let online = 512;
      for (const s of sizes) {
        expect(s).to.be.at.most(online * 4);
        expect(s % 128).to.equal(0);
        online += s;
      }
      expect(online).to.equal(16_384);
    });

    it('puts the rest in the last slot, and refuses what the layout cannot hold', () => {
      expect(planDimms({ memMiB: 128, slots: 2, maxMemMiB: 8192 }, 8192)).to.deep.equal([512, 7552]);
      expect(() => planDimms(LAYOUT, 16_384 + 513)).to.throw(DriverError, /at most 16896 MiB/);
      expect(() => planDimms({ memMiB: 512, slots: 0, maxMemMiB: 512 }, 1024)).to.throw(DriverError, /at most 512 MiB/);
    });
  });

  describe('growMemory against a monitor', () => {
    let dir: string;
    let mon: Monitor | undefined;
    let qmp: QmpClient | undefined;
    const open = async (answer: (slot: number) => number[]): Promise<QmpClient> => {
      const path = join(dir, 'qmp.sock');
      mon = await monitor(path, answer);
      qmp = await QmpClient.connect(path, { deadline: Date.now() + 2000 });
      return qmp;
    };
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'memhp-test-'));
    });
    afterEach(async () => {
      qmp?.destroy();
      await new Promise<void>((r) => (mon ? mon.server.close(() => r()) : r()));
      mon = undefined;
      await rm(dir, { recursive: true, force: true });
    });

    it('adds a RAM backend and a pc-dimm per DIMM, then waits for the guest to take each', async () => {
      const q = await open(() => [0]);
      const change = await growMemory(q, LAYOUT, 16_384);
      expect(change).to.include({ addedMiB: 15_872, dimms: 3, totalMiB: 16_384 });
      await change.settled(Date.now() + 2000);
      expect(mon!.calls.slice(1)).to.deep.equal([
        { execute: 'object-add', arguments: { 'qom-type': 'memory-backend-ram', id: 'dimm0-mem', size: 2048 * 1048576 } },
        { execute: 'device_add', arguments: { driver: 'pc-dimm', id: 'dimm0', memdev: 'dimm0-mem' } },
        { execute: 'object-add', arguments: { 'qom-type': 'memory-backend-ram', id: 'dimm1-mem', size: 10_240 * 1048576 } },
        { execute: 'device_add', arguments: { driver: 'pc-dimm', id: 'dimm1', memdev: 'dimm1-mem' } },
        { execute: 'object-add', arguments: { 'qom-type': 'memory-backend-ram', id: 'dimm2-mem', size: 3584 * 1048576 } },
        { execute: 'device_add', arguments: { driver: 'pc-dimm', id: 'dimm2', memdev: 'dimm2-mem' } },
      ]);
    });

    it('sends nothing when the clone keeps the snapshot\'s RAM', async () => {
      const q = await open(() => [0]);
      const change = await growMemory(q, LAYOUT, 512);
      await change.settled(Date.now());
      expect(change).to.include({ addedMiB: 0, dimms: 0, totalMiB: 512 });
      expect(mon!.calls.map((c) => c.execute)).to.deep.equal(['qmp_capabilities']);
    });

    it('takes "pending" as pending, and reports a refusal and a silent guest as DriverError', async () => {
      let q = await open(() => [0x80, 0]);
      await (await growMemory(q, LAYOUT, 1024)).settled(Date.now() + 2000);
      qmp!.destroy();
      await new Promise<void>((r) => mon!.server.close(() => r()));

      q = await open(() => [0x81]); // insert failed in the guest
      let e = await (await growMemory(q, LAYOUT, 1024)).settled(Date.now() + 2000).catch((x: unknown) => x);
      expect(e).to.be.instanceOf(DriverError);
      expect(String(e)).to.match(/refused hot-plugged memory: slot 0: _OST status 129/);
      qmp!.destroy();
      await new Promise<void>((r) => mon!.server.close(() => r()));

      q = await open(() => []); // a guest without ACPI memory hotplug says nothing
      e = await (await growMemory(q, LAYOUT, 4096)).settled(Date.now() + 300).catch((x: unknown) => x);
      expect(e).to.be.instanceOf(DriverError);
      expect(String(e)).to.match(/took 0 of 2 memory DIMMs \(3584 MiB\) in time/);
    });

    it('refuses more than the snapshot\'s maxmem before sending anything', async () => {
      const q = await open(() => [0]);
      const e = await growMemory(q, LAYOUT, 20_000).catch((x: unknown) => x);
      expect(e).to.be.instanceOf(DriverError);
      expect(mon!.calls.map((c) => c.execute)).to.deep.equal(['qmp_capabilities']);
    });
  });

  describe('the headnode and snapshot layout', () => {
    const vm = (over: Partial<VmConfig> = {}): VmConfig => ({
      vmId: 'hn', accel: 'tcg', memMiB: 512, vcpus: 1, ramFile: '/dev/shm/hn.ram', ramShare: true, disk: '/var/hn.qcow2',
      qmpSocket: '/run/hn.qmp', qgaSocket: '/run/hn.qga', consoleSocket: '/run/hn.con', apiSocket: '/run/hn.sock', ...over,
    });
    const mOption = (cfg: VmConfig): string | undefined => {
      const a = buildVmArgs(cfg);
      return a[a.indexOf('-m') + 1];
    };

    it('boots with slots and maxmem, and a snapshot records both (a clone must match)', () => {
      const cfg = vm({ maxMemMiB: 8704, memSlots: 8 });
      expect(mOption(cfg)).to.equal('512M,slots=8,maxmem=8704M');
      expect(frozenVm(cfg)).to.include({ memMiB: 512, maxMemMiB: 8704, memSlots: 8 });
      // A clone built from the frozen layout gets the same -m.
      expect(mOption(vm({ ...frozenVm(cfg), ramShare: false, incoming: true }))).to.equal('512M,slots=8,maxmem=8704M');
    });

    it('has no slots without a maxmem above its RAM, and its snapshot cannot grow', () => {
      expect(mOption(vm())).to.equal('512M');
      expect(mOption(vm({ maxMemMiB: 512, memSlots: 8 }))).to.equal('512M');
      expect(frozenVm(vm({ maxMemMiB: 512, memSlots: 8 }))).to.not.have.any.keys('maxMemMiB', 'memSlots');
      expect(() => buildVmArgs(vm({ maxMemMiB: 256 }))).to.throw(UsageError);
      expect(() => buildVmArgs(vm({ maxMemMiB: 1024, memSlots: 300 }))).to.throw(UsageError);
    });

    it('gives a headnode slots from its record and a kernel that onlines hot-plugged memory', () => {
      const rec = (maxMemMiB?: number): HeadnodeRecord => ({
        version: 1, createdAt: 0, diskGen: 0, want: 'stopped',
        spec: { name: 'hn', owner: 'alice', group: 'alice', memMiB: 512, vcpus: 1, diskGiB: 4, ...(maxMemMiB !== undefined ? { maxMemMiB } : {}) },
        boot: { base: '/img/base.qcow2', kernel: '/img/vmlinuz', append: 'root=/dev/vda rw' },
      });
      const paths = new Layout({ stateDir: '/var/lib/copper', ramDir: '/dev/shm/copper' }).headnode('hn');
      const grows = headnodeVmConfig(rec(8704), paths, 'tcg', '/run/hn.sock', '/var/shared/alice', undefined);
      expect(grows).to.include({ maxMemMiB: 8704, memSlots: 8, append: 'root=/dev/vda rw memhp_default_state=online swiotlb=noforce' });
      // A record from before memory hot-plug (a headnode that may still run without slots).
      const old = headnodeVmConfig(rec(), paths, 'tcg', '/run/hn.sock', '/var/shared/alice', undefined);
      expect(old).to.not.have.any.keys('maxMemMiB', 'memSlots');
      expect(old.append).to.equal('root=/dev/vda rw');
    });

    it('defaults maxmem to the host\'s clone capacity in whole memory blocks, and checks --max-mem', () => {
      expect(defaultMaxMemMiB(512, 12_000)).to.equal(512 + 11_520);
      expect(defaultMaxMemMiB(512, 256)).to.equal(512);
      expect(defaultMaxMemMiB(512, 10_000_000)).to.equal(262_144);
      const spec = { name: 'hn', owner: 'alice', group: 'alice', memMiB: 512, vcpus: 1, diskGiB: 4 };
      expect(() => validateSpec({ ...spec, maxMemMiB: 256 })).to.throw(UsageError, /maxMemMiB must be an integer from memMiB \(512\)/);
      expect(() => validateSpec({ ...spec, maxMemMiB: 4096 })).to.not.throw();
    });
  });
});
