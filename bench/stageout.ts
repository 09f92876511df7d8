/**
 * Stage-out figures under the accelerator this host offers (TCG here). One headnode, clones of
 * one snapshot. Prints progress lines; the last line is one JSON object:
 *   small / big     1,000 files of 1 KiB, and one 256 MiB file, written by a job in a clone:
 *                   stageOutMs  driver.stageOut (pack in the clone, the headnode fetches it
 *                               over its API channel while the host reads it from the clone,
 *                               unpack there as the job's account)
 *                   plainTarMs  `tar -c` of the same files in the same clone, read back to the
 *                               host through the same guest agent (copyFromGuest), same run
 *                   MBps of each (archive bytes / time) and ratio = stageOutMs / plainTarMs
 *   endToF          a job writing 20 small files, through the Scheduler: ms from the command's
 *                   last line (its clock is the host's, set at clone start) to F, with the
 *                   default stage-out and with -W stageout=none (p50 of BENCH_REPS, and each)
 * Run: node dist/bench/stageout.js   (BENCH_REPS, default 3; BENCH_BIG_MIB, default 256)
 * The image is cached in $GC_STATE_DIR (default /var/tmp/copper-test).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CloneHandle, ExecSpec } from '../src/drivers/driver.js';
import { copyFromGuest } from '../src/vm/guest-files.js';
import { QemuDriver } from '../src/drivers/qemu/qemu-driver.js';
import { defaultImageSource } from '../src/image/default-image.js';
import { QemuHeadnodeManager } from '../src/headnodes/manager.js';
import { ChannelServer } from '../src/api/channels.js';
import type { JobSpec } from '../src/queue/job.js';
import { Scheduler } from '../src/scheduler/scheduler.js';
import type { StageOutRequest } from '../src/stageout/types.js';
import { startBenchRedis } from './bench-redis.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const BIG_MIB = Number(process.env.BENCH_BIG_MIB ?? 256);
const HN = 'bso';

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
const r1 = (x: number): number => Math.round(x * 10) / 10;

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'gcb-so-'));
  const settings = { stateDir: join(root, 'st'), ramDir: `/dev/shm/gcb-so-${process.pid}` };
  // Real channels as gcd has them (the headnode fetches stage-out archives on its own); gcd's
  // API itself is not part of this figure.
  const channels = new ChannelServer(settings.stateDir, (_req, res) => {
    res.writeHead(404).end();
  });
  const images = defaultImageSource({ stateDir: process.env.GC_STATE_DIR ?? '/var/tmp/copper-test', log: (l) => console.log(`image: ${l}`) });
  const mgr = new QemuHeadnodeManager({ settings, channels, images });
  const drv = new QemuDriver({ settings, channels, headnodes: mgr });
  const result: Record<string, unknown> = {};
  const inHead = (script: string): Promise<string> =>
    mgr.withRunning(HN, async (h) => {
      const st = await h.agent.run('/bin/sh', ['-c', script], { timeoutMs: 600_000 });
      if (st.exitCode !== 0) throw new Error(`${script}: ${st.err?.toString() ?? ''}`);
      return st.out?.toString() ?? '';
    });
  /** Run a command in a clone as a job would, and wait for it. */
  const job = async (c: CloneHandle, cmd: string): Promise<void> => {
    const spec: ExecSpec = { argv: ['sh', '-c', cmd], cwd: '/root', env: {}, user: 'root', stdoutFile: join(root, 'o'), stderrFile: join(root, 'e') };
    const r = await (await drv.exec(c, spec)).done;
    if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.exitCode ?? r.signal} ${await readFile(join(root, 'e'), 'utf8')}`);
  };

  /** Stage-out and a plain tar of `dir` (relative to /) in one fresh clone each rep, alternating. */
  const measure = async (snap: string, label: string, write: string, dir: string): Promise<Record<string, unknown>> => {
    const so: number[] = [];
    const plain: number[] = [];
    let soBytes = 0;
    let plainBytes = 0;
    const steps: Array<Record<string, number>> = [];
    for (let i = 0; i < REPS; i++) {
      const c = await drv.clone({ cloneId: `${label}${i}`, snapshotId: snap, hostname: `${label}${i}`, init: 'clone-init' });
      try {
        await job(c, write);
        // Plain tar through the same agent, then stage-out (the page cache warmed by both alike).
        const host = join(root, 'plain.tar');
        let t = performance.now();
        await drv.withClone(c.cloneId, async (lc) => {
          const st = await lc.agent.run('/bin/tar', ['-C', '/', '-cf', '/var/tmp/plain.tar', dir], { timeoutMs: 600_000 });
          if (st.exitCode !== 0) throw new Error(`tar: ${st.err?.toString() ?? ''}`);
          plainBytes = (await copyFromGuest(lc.agent, '/var/tmp/plain.tar', host)).bytes;
          await lc.agent.run('/bin/rm', ['-f', '/var/tmp/plain.tar']);
        });
        plain.push(performance.now() - t);
        await rm(host, { force: true });
        await inHead(`rm -rf /${dir}`);
        const req: StageOutRequest = {
          jobId: `${label}${i}.bench`,
          headnode: HN,
          paths: [`/${dir}`],
          account: 'root',
          capBytes: 4 * 1024 ** 3,
          keepDir: join(root, 'keep'),
          keepMaxBytes: 0,
        };
        t = performance.now();
        const r = await drv.stageOut(c, req);
        so.push(performance.now() - t);
        soBytes = r.bytes;
        steps.push(r.timingsMs ?? {});
        if (r.errors.length || r.conflictCount) throw new Error(`stage-out ${label}: ${JSON.stringify(r)}`);
      } finally {
        await drv.destroy(c.cloneId);
      }
      console.log(
        `${label} rep ${i}: stage-out ${Math.round(so[i])} ms (${soBytes} B; steps ${JSON.stringify(steps[i])}), plain tar ${Math.round(plain[i])} ms (${plainBytes} B)`,
      );
    }
    const soMs = pct(so, 50);
    const plainMs = pct(plain, 50);
    return {
      stageOutMs: Math.round(soMs),
      plainTarMs: Math.round(plainMs),
      ratio: r1(soMs / plainMs),
      stageOutMBps: r1(soBytes / 1e6 / (soMs / 1000)),
      plainTarMBps: r1(plainBytes / 1e6 / (plainMs / 1000)),
      each: { stageOutMs: so.map(Math.round), plainTarMs: plain.map(Math.round), stageOutStepsMs: steps },
    };
  };

  try {
    await mgr.create({ name: HN, owner: 'bench', group: 'bench', memMiB: 512, vcpus: 1, diskGiB: 4 });
    const info = await mgr.start(HN);
    result.accel = info.accel;
    await inHead('mkdir -p /root/b');
    const snap = (await drv.snapshot(HN)).id;

    const small = 'mkdir -p /root/b/small && cd /root/b/small && i=0; while [ $i -lt 1000 ]; do head -c 1024 /dev/urandom > f$i; i=$((i+1)); done';
    result.small1000 = await measure(snap, 'small', small, 'root/b/small');
    const big = `mkdir -p /root/b/big && head -c ${BIG_MIB * 1024 * 1024} /dev/urandom > /root/b/big/file`;
    result[`big${BIG_MIB}MiB`] = await measure(snap, 'big', big, 'root/b/big');
    await drv.releaseSnapshot(snap);

    // Job end -> F through the Scheduler, with and without stage-out.
    const server = await startBenchRedis(join(root, 'redis'));
    const sched = new Scheduler({
      ...server.base({ prefix: 'copperbench', serverName: 'bench', driver: drv, stateDir: join(root, 'sched') }),
      capacity: { ncpus: 2, memMiB: 8192 },
    });
    await sched.start();
    try {
      const spec = (name: string, none: boolean): JobSpec => ({
        argv: ['sh', '-c', 'mkdir -p /root/e && cd /root/e && for i in $(seq 20); do echo $i > f$i; done; date +%s%3N'],
        name,
        cwd: '/root/e',
        env: {},
        user: 'root',
        group: 'root',
        headnode: HN,
        queue: 'workq',
        priority: 0,
        join: 'n',
        rerunnable: true,
        resources: { ncpus: 1, memMiB: 0 },
        submitHost: 'bench',
        ...(none ? { stageout: 'none' as const } : {}),
      });
      await inHead('mkdir -p /root/e');
      const lat: Record<'withStageOut' | 'none', number[]> = { withStageOut: [], none: [] };
      for (let i = 0; i < REPS; i++) {
        for (const none of [false, true]) {
          const [j] = await sched.submit([spec(none ? 'n' : 's', none)]);
          const done = await sched.waitFor(j.id, 10);
          const seq = j.id.split('.')[0];
          const printed = Number((await inHead(`cat /root/e/${none ? 'n' : 's'}.o${seq}`)).trim());
          if (done.exitStatus !== 0 || !printed) throw new Error(`job ${j.id}: ${JSON.stringify(done)}`);
          lat[none ? 'none' : 'withStageOut'].push(done.endedAt! - printed);
          const home = (await inHead('ls /root/e | grep -c "^f" || true')).trim();
          console.log(`end -> F ${none ? 'without' : 'with'} stage-out: ${done.endedAt! - printed} ms (files in the headnode: ${home})`);
        }
      }
      result.endToF = {
        withStageOutMs: pct(lat.withStageOut, 50),
        noneMs: pct(lat.none, 50),
        each: lat,
      };
    } finally {
      await sched.close();
      await server.stop();
    }
  } finally {
    await drv.close();
    await channels.closeAll();
    for (const id of await drv.listSnapshots()) await drv.releaseSnapshot(id);
    await mgr.destroy(HN).catch(() => undefined);
    await mgr.close();
    await rm(root, { recursive: true, force: true });
    await rm(settings.ramDir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
