import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UsageError } from '../../src/errors.js';
import { applyGuestEgress, egressRuleset, egressTableName, LOCAL_MARK, parseGuestAllow, removeGuestEgress } from '../../src/vm/guest-egress.js';
import { qemuSliceForNft } from '../../src/vm/vm-cgroup.js';

/**
 * The guests' egress filter without a VM: the real nftables table, and processes run with the
 * guests' group id as QEMU is (setpriv), connecting to listeners on this host's own loopback
 * only (127.0.0.1 blocked, 127.0.0.2 allowed by the setting). The VM test
 * (test/vm/confine.test.ts) shows the same through slirp from a headnode and a clone.
 */
describe("guests' egress filter (issue 13 item 6)", function () {
  this.timeout(60_000);
  const GID = 64000 + (process.pid % 1000);
  const PORT = 30000 + (process.pid % 20000);
  const listeners: ChildProcess[] = [];
  let qemuCg: string | undefined;

  /** What a process of group `gid` (or gcd's own) reads from ADDR:PORT; '' when refused. */
  const fetch = (addr: string, gid?: number, port = PORT): string => {
    const cmd =
      gid === undefined
        ? ['socat', '-T2', '-', `TCP:${addr}:${port}`]
        : ['setpriv', '--regid', String(gid), '--clear-groups', 'socat', '-T2', '-', `TCP:${addr}:${port}`];
    return spawnSync(cmd[0] ?? 'socat', cmd.slice(1), { encoding: 'utf8', input: '' }).stdout;
  };

  before(async function () {
    if (process.getuid?.() !== 0 || spawnSync('nft', ['--version']).status !== 0) this.skip();
    for (const addr of ['127.0.0.1', '127.0.0.2']) {
      listeners.push(spawn('socat', [`TCP-LISTEN:${PORT},bind=${addr},reuseaddr,fork`, `SYSTEM:echo at-${addr}`], { stdio: 'ignore' }));
    }
    // A listener in copper.slice stands for a QEMU's own socket (libslirp's guestfwd pair).
    const slice = await qemuSliceForNft();
    if (slice !== undefined) {
      qemuCg = join('/sys/fs/cgroup', slice, `cf-egress-${process.pid}`);
      mkdirSync(qemuCg, { recursive: true });
      listeners.push(
        spawn('sh', ['-c', `echo $$ > ${qemuCg}/cgroup.procs && exec socat TCP-LISTEN:${PORT + 1},bind=127.0.0.1,reuseaddr,fork SYSTEM:'echo qemu-own'`], {
          stdio: 'ignore',
        }),
      );
    }
    for (let i = 0; i < 50 && fetch('127.0.0.2') === ''; i++) await sleep(100);
  });

  after(async function () {
    for (const l of listeners) l.kill();
    await removeGuestEgress(GID);
    for (let i = 0; qemuCg !== undefined && i < 50; i++) {
      try {
        rmdirSync(qemuCg);
        break;
      } catch {
        await sleep(100);
      }
    }
  });

  it('reads GC_GUEST_ALLOW: addresses and CIDRs of both families, or all; refuses anything else in one line', function () {
    expect(parseGuestAllow('')).to.deep.equal({ open: false, allow: [] });
    expect(parseGuestAllow('10.1.2.3, 192.168.0.0/16 fd00::/8')).to.deep.equal({ open: false, allow: ['10.1.2.3', '192.168.0.0/16', 'fd00::/8'] });
    expect(parseGuestAllow('all')).to.deep.equal({ open: true });
    for (const bad of ['10.1.2.3/33', 'example.com', '10.0.0.0/8/1', '::1/129', '1.2.3']) {
      expect(() => parseGuestAllow(bad), bad).to.throw(UsageError, /^GC_GUEST_ALLOW=/);
    }
  });

  it("matches only sockets of the guests' group, and lets DNS to the host resolvers through", function () {
    const rules = egressRuleset({ gid: 4242, allow: ['10.9.0.0/16'], resolvers: ['10.255.255.53'], qemuSlice: 'copper.slice' });
    expect(rules).to.contain('meta skgid 4242 ct state new,untracked jump guest');
    expect(rules).to.contain('elements = { 10.9.0.0/16 }');
    expect(rules).to.contain('ip daddr @dns4 meta l4proto { tcp, udp } th dport 53 accept');
    expect(rules).to.contain(`fib daddr type local ct mark set ${LOCAL_MARK} accept`);
    expect(rules).to.contain(`ct state new ct mark ${LOCAL_MARK} socket cgroupv2 level 1 "copper.slice" accept`);
    expect(rules).to.contain('169.254.0.0/16');
    expect(rules).to.contain('fe80::/10');
  });

  it("refuses the guests' group the host's loopback; an allowed address stays reachable; gcd's own traffic is untouched", async function () {
    expect(fetch('127.0.0.1', GID), 'before the table').to.equal('at-127.0.0.1\n');
    await applyGuestEgress(GID, '127.0.0.2/32');
    expect(spawnSync('nft', ['list', 'table', 'inet', egressTableName(GID)]).status).to.equal(0);
    expect(fetch('127.0.0.1', GID)).to.equal('');
    expect(fetch('127.0.0.2', GID)).to.equal('at-127.0.0.2\n');
    expect(fetch('127.0.0.1')).to.equal('at-127.0.0.1\n');
    expect(fetch('127.0.0.1', GID + 1), 'another group').to.equal('at-127.0.0.1\n');
    // A QEMU's own loopback socket (Copper's cgroup) stays reachable: guestfwd needs it.
    if (qemuCg !== undefined) expect(fetch('127.0.0.1', GID, PORT + 1)).to.equal('qemu-own\n');
    // A restart of gcd replaces the table atomically; with the allowance gone, .2 is refused too.
    await applyGuestEgress(GID, '');
    expect(fetch('127.0.0.2', GID)).to.equal('');
    // GC_GUEST_ALLOW=all is the admin's explicit way out: no table.
    await applyGuestEgress(GID, 'all');
    expect(fetch('127.0.0.1', GID)).to.equal('at-127.0.0.1\n');
  });
});
