/**
 * Virtual cluster figures, with gcd as a process and a real headnode (TCG here):
 *  - time from `gc clone 8` (copper.clone(8) in a Python program inside the headnode) until
 *    the call returns, and until all 8 clones answer a TCP connect on the cluster network
 *    (a server started in the headnode before the fork, so it runs in every clone);
 *  - host memory per live clone (Pss and Private of its QEMU, /proc/<pid>/smaps_rollup), right
 *    after the fork and after the clones idled a while;
 *  - `gc kill --all` time.
 * Prints progress lines, then one JSON object on the last line.
 *
 * Environment: BENCH_CLONES (8), BENCH_MEM (256 MiB), BENCH_IDLE_S (10), BENCH_SHARED (1: the
 * headnode keeps its shared volume mounted, so each clone remounts /shared; 0: unmounted before
 * the fork), GC_IMAGE_DIR (image cache, default /var/tmp/copper-test/images),
 * GC_CLONE_CONCURRENCY (clones started at once by gcd).
 */
import { spawnSync } from 'node:child_process';
import { GcdProcess } from '../test/helpers/gcd-process.js';
import type { CloneInfo } from '../src/clusters/types.js';

const N = Number(process.env.BENCH_CLONES ?? 8);
const MEM = Number(process.env.BENCH_MEM ?? 256);
const IDLE_S = Number(process.env.BENCH_IDLE_S ?? 10);
const SHARED = process.env.BENCH_SHARED !== '0';
const HN = 'bench-hn';

/** Runs inside the headnode: fork, then wait until every clone answers on port 8000. */
const FORK_AND_PROBE = String.raw`
import copper, json, os, socket, sys, time, threading
n = int(sys.argv[1])
t0 = time.monotonic()
made = copper.clone(n)
if not made:
    os._exit(0)  # the copy in a new clone: leave without the interpreter's teardown (CPU the other clones need)
t_return = time.monotonic() - t0
answered = {}
def probe(c):
    while True:
        try:
            socket.create_connection((c["name"], 8000), timeout=1).close()
            answered[c["id"]] = time.monotonic() - t0
            return
        except OSError:
            time.sleep(0.02)
ts = [threading.Thread(target=probe, args=(c,)) for c in made]
[t.start() for t in ts]
[t.join(120) for t in ts]
print(json.dumps({"returnMs": round(t_return * 1000), "allAnsweringMs": round(max(answered.values()) * 1000) if len(answered) == n else None,
                  "answered": len(answered), "ids": [c["id"] for c in made]}))
`;

function mean(xs: number[]): number {
  return xs.length ? Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 10) / 10 : 0;
}

async function main(): Promise<void> {
  const g = new GcdProcess({ GC_IMAGE_DIR: process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images', GC_MAX_CLONES: String(Math.max(N, 8)) });
  await g.start();
  const gc = (...a: string[]) => {
    const r = g.tool('gc', a);
    if (r.status !== 0) throw new Error(`gc ${a.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const inside = (script: string) => gc('headnode', 'exec', HN, '--timeout', '900', '--', 'sh', '-c', script);
  const result: Record<string, unknown> = { clones: N, headnodeMemMiB: MEM, sharedVolume: SHARED, concurrency: Number(process.env.GC_CLONE_CONCURRENCY) || 4 };
  try {
    gc('headnode', 'create', HN, '--owner', 'bench', '--mem', String(MEM));
    let t = Date.now();
    gc('headnode', 'start', HN);
    console.log(`headnode booted in ${Date.now() - t} ms`);
    result.accel = (gc('headnode', 'list').match(new RegExp(`^${HN}\\s+\\S+\\s+\\S+\\s+\\S+\\s+(\\S+)`, 'm')) ?? [])[1];
    // copper-init mounts /shared after the network; wait for it, then keep or drop it.
    inside(`for i in $(seq 300); do grep -q " /shared fuse.sshfs " /proc/mounts && break; sleep 0.2; done${SHARED ? '' : '; umount -l /shared'}`);
    inside(
      `cat > /root/fork.py <<'PY'\n${FORK_AND_PROBE}\nPY\nsetsid python3 -m http.server 8000 </dev/null >/dev/null 2>&1 &\nfor i in $(seq 150); do python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8000))' 2>/dev/null && exit 0; sleep 0.2; done; exit 1`,
    );

    t = Date.now();
    const out = inside(`python3 /root/fork.py ${N}`);
    const wallMs = Date.now() - t;
    const probe = JSON.parse(out.trim().split('\n').pop()!) as { returnMs: number; allAnsweringMs: number | null; answered: number };
    console.log(
      `gc clone ${N}: returned after ${probe.returnMs} ms, all ${probe.answered} answering after ${probe.allAnsweringMs} ms (in the headnode; ${wallMs} ms with gc headnode exec around it)`,
    );
    result.gcCloneReturnMs = probe.returnMs;
    result.allAnsweringMs = probe.allAnsweringMs;
    result.answered = probe.answered;

    const memory = (): { pssMiB: number; privateMiB: number; each: Array<{ id: number; pssMiB?: number; privateMiB?: number }> } => {
      const list = JSON.parse(gc('clones', '--headnode', HN, '--json')) as CloneInfo[];
      return {
        pssMiB: mean(list.map((c) => c.pssMiB ?? 0)),
        privateMiB: mean(list.map((c) => c.privateMiB ?? 0)),
        each: list.map((c) => ({ id: c.id, pssMiB: c.pssMiB, privateMiB: c.privateMiB })),
      };
    };
    const fresh = memory();
    console.log(`memory per clone just after the fork: Pss ${fresh.pssMiB} MiB, Private ${fresh.privateMiB} MiB`);
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const idle = memory();
    console.log(`memory per clone after ${IDLE_S} s idle: Pss ${idle.pssMiB} MiB, Private ${idle.privateMiB} MiB`);
    result.perCloneMiB = {
      afterFork: { pss: fresh.pssMiB, private: fresh.privateMiB },
      afterIdle: { pss: idle.pssMiB, private: idle.privateMiB, idleS: IDLE_S },
    };

    t = Date.now();
    gc('kill', '--all', '--headnode', HN);
    result.killAllMs = Date.now() - t;
    console.log(`gc kill --all: ${String(result.killAllMs)} ms`);
  } finally {
    g.tool('gc', ['kill', '--all', '--headnode', HN]);
    g.tool('gc', ['headnode', 'destroy', HN]);
    await g.stop();
    const left = spawnSync('pgrep', ['-f', `qemu-system.*${g.stateDir}`])
      .stdout.toString()
      .trim();
    if (left) console.error(`left running: ${left}`);
    await g.cleanup();
  }
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
