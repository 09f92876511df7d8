import { expect } from 'chai';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '../../src/vm/qmp.js';
import { resizeVcpus } from '../../src/vm/vcpu-hotplug.js';
import { DriverError } from '../../src/errors.js';

/**
 * A monitor with the CPU layout of `-smp have,maxcpus=max` under TCG: it records device_add /
 * device_del and answers each with the _OST events `answer` gives (the guest's side).
 */
interface Monitor {
  server: Server;
  calls: Array<{ execute: string; arguments?: Record<string, unknown> }>;
}

function monitor(path: string, have: number, max: number, answer: (slot: number, source: number) => number[]): Promise<Monitor> {
  const calls: Monitor['calls'] = [];
  const server = createServer((s: Socket) => {
    s.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + '\r\n');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id?: string; arguments?: Record<string, unknown> };
        buf = buf.slice(nl + 1);
        calls.push({ execute: msg.execute, ...(msg.arguments ? { arguments: msg.arguments } : {}) });
        const reply = (body: unknown): void => void s.write(JSON.stringify({ return: body, id: msg.id }) + '\r\n');
        const ost = (slot: number, source: number): void => {
          for (const status of answer(slot, source)) {
            s.write(JSON.stringify({ event: 'ACPI_DEVICE_OST', data: { info: { slot: String(slot), 'slot-type': 'CPU', source, status } } }) + '\r\n');
          }
        };
        switch (msg.execute) {
          case 'qmp_capabilities':
            reply({});
            break;
          case 'query-hotpluggable-cpus':
            // Newest first, as QEMU lists them; plugged ones carry a qom-path.
            reply(Array.from({ length: max }, (_, i) => max - 1 - i).map((core) => ({
              type: 'max-x86_64-cpu', 'vcpus-count': 1, props: { 'socket-id': 0, 'core-id': core, 'thread-id': 0 },
              ...(core < have ? { 'qom-path': `/machine/unattached/device[${core}]` } : {}),
            })));
            break;
          case 'query-cpus-fast':
            reply(Array.from({ length: have }, (_, i) => ({ 'cpu-index': i, 'qom-path': `/machine/unattached/device[${i}]` })));
            break;
          case 'device_add': {
            reply({});
            const core = Number(msg.arguments?.['core-id']);
            setTimeout(() => ost(core, 1), 5);
            break;
          }
          case 'device_del': {
            reply({});
            const idx = Number(/\[(\d+)\]/.exec(String(msg.arguments?.id))?.[1]);
            have--;
            setTimeout(() => ost(idx, 3), 5);
            break;
          }
          default:
            s.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: msg.execute }, id: msg.id }) + '\r\n');
        }
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve({ server, calls })));
}

describe('resizing a clone\'s vCPUs (-l ncpus)', () => {
  let dir: string;
  let mon: Monitor | undefined;
  let qmp: QmpClient | undefined;
  const open = async (have: number, max: number, answer: (slot: number, source: number) => number[]): Promise<QmpClient> => {
    const path = join(dir, 'qmp.sock');
    mon = await monitor(path, have, max, answer);
    qmp = await QmpClient.connect(path, { deadline: Date.now() + 2000 });
    return qmp;
  };
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vcpu-test-'));
  });
  afterEach(async () => {
    qmp?.destroy();
    await new Promise<void>((r) => (mon ? mon.server.close(() => r()) : r()));
    mon = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('plugs CPUs into the lowest free slots and waits for the guest to take each', async () => {
    const q = await open(1, 8, () => [0]);
    const change = await resizeVcpus(q, 1, 8, 3);
    expect(change).to.include({ added: 2, removed: 0, count: 3 });
    await change.settled(Date.now() + 2000);
    const adds = mon!.calls.filter((c) => c.execute === 'device_add').map((c) => c.arguments);
    expect(adds).to.deep.equal([
      { driver: 'max-x86_64-cpu', id: 'cpu1', 'socket-id': 0, 'core-id': 1, 'thread-id': 0 },
      { driver: 'max-x86_64-cpu', id: 'cpu2', 'socket-id': 0, 'core-id': 2, 'thread-id': 0 },
    ]);
  });

  it('unplugs the highest boot CPUs, never CPU 0, and takes an eject\'s "pending" answer as pending', async () => {
    const q = await open(4, 4, (_slot, source) => (source === 3 ? [0x84, 0] : [0]));
    const change = await resizeVcpus(q, 4, 4, 1);
    expect(change).to.include({ added: 0, removed: 3 });
    await change.settled(Date.now() + 2000);
    const dels = mon!.calls.filter((c) => c.execute === 'device_del').map((c) => c.arguments?.id);
    expect(dels).to.deep.equal(['/machine/unattached/device[3]', '/machine/unattached/device[2]', '/machine/unattached/device[1]']);
  });

  it('reports a guest that refuses, and one that never answers, as DriverError', async () => {
    let q = await open(2, 2, () => [0x82]); // eject: device busy
    let e = await (await resizeVcpus(q, 2, 2, 1)).settled(Date.now() + 2000).catch((x: unknown) => x);
    expect(e).to.be.instanceOf(DriverError);
    expect(String(e)).to.match(/refused a vCPU removal: slot 1: _OST status 130/);
    qmp!.destroy();
    await new Promise<void>((r) => mon!.server.close(() => r()));
    q = await open(1, 4, () => []); // an image without ACPI CPU hotplug says nothing
    e = await (await resizeVcpus(q, 1, 4, 2)).settled(Date.now() + 300).catch((x: unknown) => x);
    expect(e).to.be.instanceOf(DriverError);
    expect(String(e)).to.match(/took 0 of 1 vCPU additions in time/);
  });

  it('changes nothing when the count is already right, and refuses more than the slots', async () => {
    const q = await open(2, 4, () => [0]);
    const same = await resizeVcpus(q, 2, 4, 2);
    await same.settled(Date.now());
    expect(mon!.calls.map((c) => c.execute)).to.deep.equal(['qmp_capabilities']);
    const e = await resizeVcpus(q, 2, 4, 5).catch((x: unknown) => x);
    expect(e).to.be.instanceOf(DriverError);
    expect(String(e)).to.match(/at most 4/);
  });
});
