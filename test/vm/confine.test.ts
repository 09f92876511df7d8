import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeGuestEgress } from '../../src/vm/guest-egress.js';
import { cgroupLayout, vmCgroupOfPid, type VmCgroup } from '../../src/vm/vm-cgroup.js';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * Issue 13 items 6 and 7 with a real headnode and a real job clone under TCG.
 *
 * Egress: test traffic goes only to listeners this test makes: one on the host's own loopback
 * (the guest's 10.0.2.2) and two in a network namespace it makes (`cf-…`, 10.213.N.0/24 on a
 * veth pair, routed nowhere else). The config allows one of the two namespace addresses.
 * Confinement: each QEMU has QEMU's seccomp filter, the guests' group id and a cgroup of its
 * own with the limits, and the cgroup is gone once the VM is.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';
const N = 1 + (process.pid % 250);
const NS = `cf-ns${process.pid % 100000}`;
const VETH_HOST = `cf-h${process.pid % 100000}`;
const VETH_NS = `cf-n${process.pid % 100000}`;
const HOST_ADDR = `10.213.${N}.1`;
const BLOCKED_ADDR = `10.213.${N}.2`;
const ALLOWED_ADDR = `10.213.${N}.3`;
const NS_PORT = 7000;
const GID = 61000 + (process.pid % 3000);
const MEM_MIB = 384;

function sh(cmd: string): void {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
}

/** Seccomp mode, groups and the Copper cgroup of a QEMU, read from /proc. */
function confinement(pid: number, vmId: string): { seccomp: string; gid: string; cgroup: VmCgroup | undefined } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    seccomp: /^Seccomp:\s+(\d+)/m.exec(status)?.[1] ?? '',
    gid: /^Gid:\s+(.*)$/m.exec(status)?.[1]?.trim() ?? '',
    cgroup: vmCgroupOfPid(pid, vmId),
  };
}

/** memory / cpu / pids limits of a cgroup, whichever version the host runs. */
function limits(cg: VmCgroup): { memBytes: number; cpuQuota: number; pids: number } {
  const read = (name: string): string | undefined => {
    for (const d of cg.dirs) if (existsSync(join(d, name))) return readFileSync(join(d, name), 'utf8').trim();
    return undefined;
  };
  const v2 = cgroupLayout()?.kind === 'v2';
  return {
    memBytes: Number(v2 ? read('memory.max') : read('memory.limit_in_bytes')),
    cpuQuota: Number(v2 ? (read('cpu.max') ?? '').split(' ')[0] : read('cpu.cfs_quota_us')),
    pids: Number(read('pids.max')),
  };
}

/** Tries each HOST:PORT from inside a guest with bash's /dev/tcp: prints `OK <banner>` or `NO`. */
const PROBE = (targets: string[]): string =>
  targets
    .map((t) => {
      const [h, p] = t.split(':');
      return `if r=$(timeout 15 bash -c 'exec 3<>/dev/tcp/${h}/${p} && head -n1 <&3' 2>/dev/null) && [ -n "$r" ]; then echo "${t} OK $r"; else echo "${t} NO"; fi`;
    })
    .join('; ');

describe('confinement: QEMU sandboxed in its own cgroup, guest egress filtered (issue 13 items 6, 7) @vm', function () {
  this.timeout(1_200_000);
  let g: GcdProcess;
  let loopPort = 0;
  const nsListeners: ChildProcess[] = [];
  const inside = (script: string, t = 600) => g.inHeadnode('cf-hn', script, t);

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    // The host's own loopback service (what 10.0.2.2 leads to); a process of its own, since
    // the checks below block this one.
    loopPort = 40000 + (process.pid % 20000);
    nsListeners.push(spawn('socat', [`TCP-LISTEN:${loopPort},bind=127.0.0.1,reuseaddr,fork`, 'SYSTEM:echo loopback-service'], { stdio: 'ignore' }));
    // A private network of the test's own: a namespace with two addresses behind a veth pair.
    sh(`ip netns add ${NS}`);
    sh(`ip link add ${VETH_HOST} type veth peer name ${VETH_NS} netns ${NS}`);
    sh(`ip addr add ${HOST_ADDR}/24 dev ${VETH_HOST} && ip link set ${VETH_HOST} up`);
    sh(`ip -n ${NS} addr add ${BLOCKED_ADDR}/24 dev ${VETH_NS} && ip -n ${NS} addr add ${ALLOWED_ADDR}/24 dev ${VETH_NS}`);
    sh(`ip -n ${NS} link set ${VETH_NS} up && ip -n ${NS} link set lo up`);
    for (const [addr, word] of [
      [BLOCKED_ADDR, 'private-blocked'],
      [ALLOWED_ADDR, 'private-allowed'],
    ] as const) {
      nsListeners.push(
        spawn('ip', ['netns', 'exec', NS, 'socat', `TCP-LISTEN:${NS_PORT},bind=${addr},reuseaddr,fork`, `SYSTEM:echo ${word}`], { stdio: 'ignore' }),
      );
    }
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_VM_GID: String(GID), GC_GUEST_ALLOW: `${ALLOWED_ADDR}/32` });
    await g.start();
    // The host itself reaches all three (so a refusal below is the filter's doing).
    await until(
      'the namespace listeners',
      () => spawnSync('socat', ['-T2', '-', `TCP:${ALLOWED_ADDR}:${NS_PORT}`], { encoding: 'utf8' }).stdout === 'private-allowed\n',
    );
    expect(spawnSync('socat', ['-T2', '-', `TCP:${BLOCKED_ADDR}:${NS_PORT}`], { encoding: 'utf8' }).stdout).to.equal('private-blocked\n');
    await until(
      'the loopback listener',
      () => spawnSync('socat', ['-T2', '-', `TCP:127.0.0.1:${loopPort}`], { encoding: 'utf8' }).stdout === 'loopback-service\n',
    );
    g.startHeadnodes([['cf-hn', 'carol']], MEM_MIB);
  });

  after(async function () {
    if (g) {
      g.tool('gc', ['headnode', 'destroy', 'cf-hn']);
      await g.cleanup();
    }
    for (const p of nsListeners) p.kill();
    spawnSync('ip', ['link', 'del', VETH_HOST]);
    spawnSync('ip', ['netns', 'del', NS]);
    await removeGuestEgress(GID);
  });

  it("runs the headnode's QEMU with the seccomp filter, the guests' group and a cgroup with its limits", function () {
    const pid = g.pidOf('headnodes/cf-hn/qemu.pid');
    const c = confinement(pid, 'cf-hn');
    expect(c.seccomp, '/proc/PID/status Seccomp').to.equal('2');
    expect(c.gid.split(/\s+/)).to.deep.equal([String(GID), String(GID), String(GID), String(GID)]);
    expect(c.cgroup, "QEMU's cgroup").to.not.equal(undefined);
    const l = limits(c.cgroup!);
    expect(l.pids).to.equal(512);
    expect(l.cpuQuota).to.be.at.least(100_000); // vcpus (maxcpus) × the 100 ms period
    expect(l.memBytes).to.be.at.least(MEM_MIB * 1024 * 1024);
    expect(l.memBytes).to.be.below(64 * 1024 * 1024 * 1024);
    // The guest's own channel to gcd still works (guestfwd spawns socat under the filter).
    const q = inside('gcqstat >/dev/null && echo api-ok');
    expect(q.stdout, q.stderr).to.equal('api-ok\n');
  });

  it("a headnode cannot reach the host's loopback or a private address; an allowed one it can", function () {
    const r = inside(PROBE([`10.0.2.2:${loopPort}`, `${BLOCKED_ADDR}:${NS_PORT}`, `${ALLOWED_ADDR}:${NS_PORT}`]), 300);
    expect(r.stdout.split('\n').filter(Boolean), r.stderr).to.deep.equal([
      `10.0.2.2:${loopPort} NO`,
      `${BLOCKED_ADDR}:${NS_PORT} NO`,
      `${ALLOWED_ADDR}:${NS_PORT} OK private-allowed`,
    ]);
  });

  it('a job clone is confined the same way, and its cgroup goes with it', async function () {
    // A quoted here-document: the probe must run in the clone, not be expanded in the headnode.
    const probe = PROBE([`10.0.2.2:${loopPort}`, `${BLOCKED_ADDR}:${NS_PORT}`, `${ALLOWED_ADDR}:${NS_PORT}`]);
    const prep = inside(`mkdir -p /root/w && cat > /root/w/probe.sh <<'EOF'\n${probe}\nsleep 15\nEOF\necho ok`);
    expect(prep.stdout, prep.stderr).to.equal('ok\n');
    const sub = inside('cd /root/w && gcqsub sh /root/w/probe.sh');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const seq = id.split('.')[0];
    const cloneId = `j${seq}-r1`;
    const pidFile = join(g.stateDir, 'clones', cloneId, 'qemu.pid');
    const pid = await until('the clone to run', () => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) || false : false), 600_000);
    const c = confinement(pid, cloneId);
    expect(c.seccomp).to.equal('2');
    expect(c.gid.split(/\s+/)[0]).to.equal(String(GID));
    expect(c.cgroup).to.not.equal(undefined);
    const dirs = c.cgroup!.dirs;
    expect(dirs.every((d) => existsSync(d))).to.equal(true);
    expect(limits(c.cgroup!).pids).to.equal(512);
    const state = (): string | undefined => {
      const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
      return r.status === 0 ? (JSON.parse(r.stdout) as { Jobs: Record<string, { job_state: string }> }).Jobs[id]?.job_state : undefined;
    };
    await until(`job ${id} to finish`, () => state() === 'F', 600_000);
    await until('the clone cgroup removed', () => dirs.every((d) => !existsSync(d)), 60_000);
    const out = inside(`cat /root/w/sh.o${seq}`);
    expect(out.stdout.split('\n').filter(Boolean), out.stderr).to.deep.equal([
      `10.0.2.2:${loopPort} NO`,
      `${BLOCKED_ADDR}:${NS_PORT} NO`,
      `${ALLOWED_ADDR}:${NS_PORT} OK private-allowed`,
    ]);
  });

  it("removes the headnode's cgroup when the headnode is destroyed", async function () {
    const pid = g.pidOf('headnodes/cf-hn/qemu.pid');
    const dirs = confinement(pid, 'cf-hn').cgroup!.dirs;
    const d = g.tool('gc', ['headnode', 'destroy', 'cf-hn']);
    expect(d.status, d.stderr).to.equal(0);
    await until('the headnode cgroup removed', () => dirs.every((x) => !existsSync(x)), 60_000);
  });
});
