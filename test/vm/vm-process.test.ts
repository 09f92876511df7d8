import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, mkdir, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildVmArgs, type VmConfig } from '../../src/vm/vm-args.js';
import { VmProcess, pidAlive } from '../../src/vm/vm-process.js';
import { DriverError } from '../../src/errors.js';

const run = promisify(execFile);

/** A diskless-boot VM (SeaBIOS idles on an empty disk): enough to exercise process handling. */
async function config(dir: string, vmId: string, over: Partial<VmConfig> = {}): Promise<VmConfig> {
  const disk = join(dir, `${vmId}.qcow2`);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
  return {
    vmId,
    accel: 'tcg',
    memMiB: 64,
    vcpus: 1,
    ramFile: join(dir, `${vmId}.ram`),
    ramShare: true,
    disk,
    qmpSocket: join(dir, `${vmId}.qmp`),
    qgaSocket: join(dir, `${vmId}.qga`),
    consoleSocket: join(dir, `${vmId}.con`),
    apiSocket: join(dir, `${vmId}.api`),
    tcgTbMiB: 16,
    ...over,
  };
}

describe('VmProcess @vm', function () {
  this.timeout(60_000);
  let dir: string;
  const started: VmProcess[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmproc-'));
    await mkdir(dir, { recursive: true });
  });
  afterEach(async () => {
    for (const vm of started.splice(0)) await vm.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('spawns a job VM, answers QMP, and is gone after kill', async () => {
    const cfg = await config(dir, 'vp-job');
    const vm = await VmProcess.spawn({
      vmId: cfg.vmId, args: buildVmArgs(cfg), lifetime: 'job', qmpSocket: cfg.qmpSocket,
      logFile: join(dir, 'q.log'), pidFile: join(dir, 'q.pid'),
    });
    started.push(vm);
    const st = await vm.qmp.execute<{ status: string }>('query-status');
    expect(st.status).to.equal('running');
    expect(pidAlive(vm.pid, 'vp-job')).to.equal(true);
    expect(pidAlive(vm.pid, 'other')).to.equal(false);
    await vm.kill();
    expect(vm.isAlive()).to.equal(false);
    expect(pidAlive(vm.pid, 'vp-job')).to.equal(false);
  });

  it('reports a QEMU that fails to start with its own message', async () => {
    const cfg = await config(dir, 'vp-bad', { disk: join(dir, 'missing.qcow2') });
    const err = await VmProcess.spawn({
      vmId: cfg.vmId, args: buildVmArgs(cfg), lifetime: 'job', qmpSocket: cfg.qmpSocket,
      logFile: join(dir, 'q.log'), pidFile: join(dir, 'q.pid'),
    }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(DriverError);
    expect(String(err)).to.match(/failed to start.*missing\.qcow2/s);
    await access(join(dir, 'q.pid')).then(() => expect.fail('pid file left'), () => undefined);
  });

  it('finds a detached VM again through its pid file, and not a dead one', async () => {
    const cfg = await config(dir, 'vp-det');
    const pidFile = join(dir, 'q.pid');
    const vm = await VmProcess.spawn({
      vmId: cfg.vmId, args: buildVmArgs(cfg), lifetime: 'detached', qmpSocket: cfg.qmpSocket,
      logFile: join(dir, 'q.log'), pidFile,
    });
    started.push(vm);
    await vm.qmp.close();
    const again = await VmProcess.reattach('vp-det', pidFile, cfg.qmpSocket);
    expect(again.ok).to.equal(true);
    if (!again.ok) return;
    expect(again.vm.pid).to.equal(vm.pid);
    expect((await again.vm.qmp.execute<{ status: string }>('query-status')).status).to.equal('running');
    await again.vm.kill('SIGTERM', 3000);
    await vm.exited;
    const dead = await VmProcess.reattach('vp-det', pidFile, cfg.qmpSocket);
    expect(dead.ok).to.equal(false);
    if (!dead.ok) expect(dead.reason).to.match(/no longer running/);
  });
});
