/**
 * VM benchmark under the accelerator this host offers (TCG here). Prints figures as it goes;
 * the last line is one JSON object:
 *   pauseMs512 / pauseMs2048   headnode pause per snapshot (each run), idle and with RAM in use, with
 *                              the default method (background-snapshot where the host allows it)
 *                              and, in the same run, with the RAM copied inside the pause
 *                              (GC_SNAPSHOT_RAM=copy) for comparison
 *   cloneReadyMs               spawn -> agent answering, and spawn -> clone-init done (p50/p95)
 *   waveMs                     1, 8, 32 concurrent clones of one snapshot: time until all have
 *                              run a command (clone + exec `hostname`), from the first clone() call
 *   idleCloneMemMiB            per idle clone, from /proc/<pid>/smaps_rollup: Private_Dirty
 *                              (memory the clone alone holds) and Pss (its fair share incl. the
 *                              shared snapshot pages), averaged over the 8-clone wave
 *   submitToOutputMs           a trivial job (`echo`) through the whole pipeline: Scheduler.submit
 *                              (snapshot, Redis, BullMQ) -> clone -> run -> its .o file written
 *                              into the headnode, where the user reads it (p50 of 5, and each)
 * Run: node dist/bench/vm.js   (BENCH_SKIP_2G=1 to skip the 2 GiB headnode, BENCH_WAVES=1,8)
 * The image is cached in $GC_STATE_DIR (default /var/tmp/copper-test).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CloneHandle } from '../src/drivers/driver.js';
import { QemuDriver } from '../src/drivers/qemu/qemu-driver.js';
import { defaultImageSource } from '../src/image/default-image.js';
import { QemuHeadnodeManager } from '../src/headnodes/manager.js';
import type { GuestChannels, GuestIdentity } from '../src/headnodes/types.js';
import type { JobSpec } from '../src/queue/job.js';
import { Scheduler } from '../src/scheduler/scheduler.js';
import { startBenchRedis } from './bench-redis.js';

const channelsDir = { path: '' };
const channels: GuestChannels = {
  async open(id: GuestIdentity): Promise<string> {
    return join(channelsDir.path, `${id.vmId}.sock`);
  },
  async close(): Promise<void> {},
};

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
const r1 = (x: number): number => Math.round(x * 10) / 10;

async function smaps(pid: number): Promise<{ privateDirtyKiB: number; pssKiB: number; rssKiB: number }> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const get = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { privateDirtyKiB: get('Private_Dirty'), pssKiB: get('Pss'), rssKiB: get('Rss') };
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'gcb-'));
  const settings = { stateDir: join(root, 'st'), ramDir: `/dev/shm/gcb-${process.pid}` };
  channelsDir.path = join(settings.stateDir, 'run', 'channels');
  const images = defaultImageSource({ stateDir: process.env.GC_STATE_DIR ?? '/var/tmp/copper-test', log: (l) => console.log(`image: ${l}`) });
  const mgr = new QemuHeadnodeManager({ settings, channels, images });
  const streams = new Map<string, Promise<void>>();
  const drv = new QemuDriver({ settings, channels, headnodes: mgr, streams });
  const copyDrv = new QemuDriver({ settings, channels, headnodes: mgr, streams, snapshotRam: 'copy' });
  const waves = (process.env.BENCH_WAVES ?? '1,8,32').split(',').map(Number);
  const result: Record<string, unknown> = { accel: '' };
  const inHead = (name: string, script: string): Promise<void> =>
    mgr.withRunning(name, async (h) => {
      const st = await h.agent.run('/bin/sh', ['-c', script], { timeoutMs: 120_000 });
      if (st.exitCode !== 0) throw new Error(`${script}: ${st.err?.toString() ?? ''}`);
    });

  /** Snapshots `n` times, idle, then with `busyMiB` of guest RAM filled; returns pauses. */
  const pauses = async (
    name: string,
    busyMiB: number,
    n: number,
  ): Promise<{ idle: number[]; busy: number[]; idleCopy: number[]; busyCopy: number[]; lastSnap: string }> => {
    const idle: number[] = [];
    const busy: number[] = [];
    const idleCopy: number[] = [];
    const busyCopy: number[] = [];
    let lastSnap = '';
    const both = async (auto: number[], copy: number[]): Promise<void> => {
      for (const [d, into] of [
        [drv, auto],
        [copyDrv, copy],
      ] as const) {
        const s = await d.snapshot(name);
        into.push(s.pauseMs);
        await d.releaseSnapshot(s.id);
      }
    };
    for (let i = 0; i < n; i++) await both(idle, idleCopy);
    // A process holding busyMiB of non-zero pages: what a working headnode looks like.
    const fill = `import time\nb = bytearray(${busyMiB} << 20); c = b'x' * (1 << 20)\nfor i in range(${busyMiB}): b[i << 20:(i + 1) << 20] = c\nopen('/tmp/filled', 'w').close()\ntime.sleep(10 ** 6)`;
    await inHead(
      name,
      `printf '%b' "${fill}" > /tmp/fill.py; setsid python3 /tmp/fill.py </dev/null >/dev/null 2>&1 & while [ ! -e /tmp/filled ]; do sleep 0.3; done`,
    );
    for (let i = 0; i < n; i++) await both(busy, busyCopy);
    lastSnap = (await drv.snapshot(name)).id;
    return { idle, busy, idleCopy, busyCopy, lastSnap };
  };

  try {
    await mgr.create({ name: 'b512', owner: 'bench', group: 'bench', memMiB: 512, vcpus: 1, diskGiB: 4 });
    let t = Date.now();
    const info = await mgr.start('b512');
    result.accel = info.accel;
    result.bootMs512 = Date.now() - t;
    console.log(`512 MiB headnode booted in ${String(result.bootMs512)} ms (${String(info.accel)})`);
    const p512 = await pauses('b512', 256, 5);
    result.pauseMs512 = {
      idle: p512.idle,
      with256MiBInUse: p512.busy,
      p50Idle: pct(p512.idle, 50),
      p50InUse: pct(p512.busy, 50),
      copy: { idle: p512.idleCopy, with256MiBInUse: p512.busyCopy, p50Idle: pct(p512.idleCopy, 50), p50InUse: pct(p512.busyCopy, 50) },
    };
    console.log(`pause at 512 MiB: idle ${p512.idle.join(', ')} ms; with 256 MiB in use ${p512.busy.join(', ')} ms`);
    console.log(`  same, RAM copied in the pause: idle ${p512.idleCopy.join(', ')} ms; with 256 MiB in use ${p512.busyCopy.join(', ')} ms`);
    const snap = p512.lastSnap;

    // Clone start, one at a time (a cold and then warm host page cache).
    const ready: number[] = [];
    const agent: number[] = [];
    const running: number[] = [];
    for (let i = 0; i < 10; i++) {
      const c = await drv.clone({ cloneId: `s${i}`, snapshotId: snap, hostname: `s${i}`, init: 'clone-init' });
      const tm = drv.cloneTimings(c.cloneId)!;
      ready.push(tm.ready!);
      agent.push(tm.agent!);
      running.push(tm.running!);
      console.log(`clone ${c.cloneId}: ${JSON.stringify(tm)}`);
      await drv.destroy(c.cloneId);
    }
    result.cloneReadyMs = {
      toRunning: { p50: pct(running, 50), p95: pct(running, 95) },
      toAgent: { p50: pct(agent, 50), p95: pct(agent, 95) },
      toCloneInitDone: { p50: pct(ready, 50), p95: pct(ready, 95) },
    };

    // Waves of concurrent clones, each running one command.
    const waveMs: Record<string, number> = {};
    for (const n of waves) {
      const t0 = Date.now();
      const handles: CloneHandle[] = [];
      const perClone = await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const c = await drv.clone({ cloneId: `w${n}-${i}`, snapshotId: snap, hostname: `w${n}-${i}` });
          handles.push(c);
          const out = join(root, `w${n}-${i}.out`);
          const cmd = await drv.exec(c, { argv: ['hostname'], cwd: '/', env: {}, user: 'root', stdoutFile: out, stderrFile: out });
          const r = await cmd.done;
          const got = (await readFile(out, 'utf8')).trim();
          if (r.exitCode !== 0 || got !== `w${n}-${i}`) throw new Error(`clone w${n}-${i}: ${JSON.stringify(r)} '${got}'`);
          return Date.now() - t0;
        }),
      );
      waveMs[String(n)] = Date.now() - t0;
      console.log(`${n} concurrent clones all ran a command after ${waveMs[String(n)]} ms (first done at ${Math.min(...perClone)} ms)`);
      if (n === 8 || (n === waves[waves.length - 1] && result.idleCloneMemMiB === undefined)) {
        await new Promise((r) => setTimeout(r, 3000)); // let them go idle
        const mem = await Promise.all(handles.map((h) => smaps(drv.clonePid(h.cloneId)!)));
        const avg = (k: 'privateDirtyKiB' | 'pssKiB' | 'rssKiB'): number => r1(mem.reduce((a, m) => a + m[k], 0) / mem.length / 1024);
        result.idleCloneMemMiB = { clones: n, privateDirty: avg('privateDirtyKiB'), pss: avg('pssKiB'), rss: avg('rssKiB') };
        console.log(`idle clone memory (avg of ${n}): ${JSON.stringify(result.idleCloneMemMiB)}`);
      }
      await Promise.all(handles.map((h) => drv.destroy(h.cloneId)));
    }
    result.waveMs = waveMs;
    await drv.releaseSnapshot(snap);

    // Submit to first output, through the real pipeline (embedded redis-server, BullMQ worker).
    {
      const server = await startBenchRedis(join(root, 'redis'));
      const sched = new Scheduler({
        ...server.base({ prefix: 'copperbench', serverName: 'bench', driver: drv, stateDir: join(root, 'sched') }),
        capacity: { ncpus: 2, memMiB: 8192 },
      });
      await sched.start();
      try {
        const spec: JobSpec = {
          argv: ['echo', 'first output'],
          name: 'trivial',
          cwd: '/root',
          env: {},
          user: 'root',
          group: 'root',
          headnode: 'b512',
          queue: 'workq',
          priority: 0,
          join: 'n',
          rerunnable: true,
          resources: { ncpus: 1, memMiB: 0 },
          submitHost: 'bench',
        };
        const lat: number[] = [];
        for (let i = 0; i < 5; i++) {
          const t1 = performance.now();
          const [job] = await sched.submit([spec]);
          const done = await sched.waitFor(job.id, 20);
          lat.push(Math.round(performance.now() - t1));
          const seq = job.id.split('.')[0];
          const out = await mgr.withRunning('b512', (h) => h.agent.run('/bin/cat', [`/root/trivial.o${seq}`]));
          if (done.exitStatus !== 0 || out.out?.toString() !== 'first output\n')
            throw new Error(`trivial job ${job.id}: ${JSON.stringify(done)} '${out.out?.toString() ?? ''}'`);
        }
        result.submitToOutputMs = { p50: pct(lat, 50), each: lat };
        console.log(`submit -> .o file in the headnode: ${lat.join(', ')} ms`);
      } finally {
        await sched.close();
        await server.stop();
      }
    }
    await mgr.destroy('b512');

    if (process.env.BENCH_SKIP_2G !== '1') {
      await mgr.create({ name: 'b2g', owner: 'bench', group: 'bench', memMiB: 2048, vcpus: 1, diskGiB: 4 });
      t = Date.now();
      await mgr.start('b2g');
      console.log(`2 GiB headnode booted in ${Date.now() - t} ms`);
      const p2 = await pauses('b2g', 1024, 3);
      result.pauseMs2048 = {
        idle: p2.idle,
        with1GiBInUse: p2.busy,
        p50Idle: pct(p2.idle, 50),
        p50InUse: pct(p2.busy, 50),
        copy: { idle: p2.idleCopy, with1GiBInUse: p2.busyCopy, p50Idle: pct(p2.idleCopy, 50), p50InUse: pct(p2.busyCopy, 50) },
      };
      console.log(`pause at 2 GiB: idle ${p2.idle.join(', ')} ms; with 1 GiB in use ${p2.busy.join(', ')} ms`);
      console.log(`  same, RAM copied in the pause: idle ${p2.idleCopy.join(', ')} ms; with 1 GiB in use ${p2.busyCopy.join(', ')} ms`);
      await drv.releaseSnapshot(p2.lastSnap);
      await mgr.destroy('b2g');
    }
  } finally {
    await copyDrv.close();
    await drv.close();
    for (const id of await drv.listSnapshots()) await drv.releaseSnapshot(id);
    for (const h of await mgr.list()) await mgr.destroy(h.name);
    await mgr.close();
    await rm(settings.ramDir, { recursive: true, force: true });
    await rm(root, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
