import { expect } from 'chai';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseQuotaText, type QuotaConfig } from '../../src/config/quotas.js';
import { QuotaError, UsageError } from '../../src/errors.js';
import {
  MAX_CLONE_ID, cloneName, cloneVmId, clusterNetwork, hostsBlock, memberAddress, memberMac, memberNic, parseCloneVmId,
} from '../../src/clusters/addressing.js';
import { CLONE_IDENTITY, HEADNODE_PREPARE, cloneEnvText } from '../../src/clusters/guest-scripts.js';
import { parseSmapsRollup } from '../../src/clusters/proc-mem.js';
import { checkCloneBatch, maxClonesSetting, type CloneHolder } from '../../src/clusters/quota.js';
import { ClusterRegistry, type CloneEntry } from '../../src/clusters/registry.js';
import { formatClones, formatDuration, formatWhoami, parseTtl } from '../../src/server/commands/gc-clone.js';
import { buildVmArgs, type VmConfig } from '../../src/vm/vm-args.js';

const cfgOf = (...l: string[]): QuotaConfig => parseQuotaText(l.join('\n') + '\n', 'quotas.yaml');

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(QuotaError);
    return (err as Error).message;
  }
  throw new Error('expected a QuotaError');
}

const holders = (user: string, group: string, n: number): CloneHolder[] => Array.from({ length: n }, () => ({ user, group }));

describe('clusters: addressing', () => {
  it('derives the L2, addresses, MACs and names from the network index and the clone id', () => {
    expect(clusterNetwork(0)).to.deep.equal({ index: 0, mcast: '239.193.0.0:20000', subnet: '10.100.0.0/24' });
    expect(clusterNetwork(258)).to.deep.equal({ index: 258, mcast: '239.193.1.2:20258', subnet: '10.101.2.0/24' });
    expect(memberAddress(258, 0)).to.equal('10.101.2.1');
    expect(memberAddress(258, 7)).to.equal('10.101.2.8');
    expect(memberAddress(0, MAX_CLONE_ID)).to.equal('10.100.0.254');
    expect(memberMac(258, 0)).to.equal('52:54:0c:01:02:01');
    expect(memberMac(258, 14)).to.equal('52:54:0c:01:02:0f');
    expect(memberNic(3, 2)).to.deep.equal({ kind: 'mcast', mcast: '239.193.0.3:20003', mac: '52:54:0c:00:03:03', localaddr: '127.0.0.1' });
    expect(cloneName('alice-hn', 4)).to.equal('alice-hn-c4');
    expect(cloneVmId('alice-hn', 4)).to.equal('alice-hn.c4');
  });

  it('a clone VM id never looks like a headnode name, and parses back', () => {
    expect(parseCloneVmId('alice-hn.c12')).to.deep.equal({ headnode: 'alice-hn', id: 12 });
    expect(parseCloneVmId('alice-hn-c12')).to.equal(undefined);
    expect(parseCloneVmId('alice-hn.c0')).to.equal(undefined);
    expect(parseCloneVmId('alice-hn.c012')).to.equal(undefined);
    expect(parseCloneVmId('alice-hn.c254')).to.equal(undefined);
  });

  it('refuses ids and indexes out of range', () => {
    expect(() => memberAddress(0, MAX_CLONE_ID + 1)).to.throw(UsageError, /out of range/);
    expect(() => memberAddress(-1, 1)).to.throw(UsageError);
    expect(() => clusterNetwork(16384)).to.throw(UsageError);
    expect(() => cloneName('x', 1.5)).to.throw(UsageError);
  });

  it('the hosts block names the headnode and every possible clone, between markers', () => {
    const b = hostsBlock('hn', 1).trimEnd().split('\n');
    expect(b[0]).to.equal('# copper cluster: begin 10.100.1.0/24');
    expect(b[1]).to.equal('10.100.1.1\thn');
    expect(b[2]).to.equal('10.100.1.2\thn-c1');
    expect(b[b.length - 2]).to.equal('10.100.1.254\thn-c253');
    expect(b[b.length - 1]).to.equal('# copper cluster: end');
  });

  it('the cluster NIC goes on the loopback multicast group; job clones get an isolated one', () => {
    const base: VmConfig = {
      vmId: 'hn.c1', accel: 'tcg', memMiB: 256, vcpus: 1, ramFile: '/r', ramShare: false, disk: '/d',
      qmpSocket: '/q', qgaSocket: '/g', consoleSocket: '/c', apiSocket: '/a',
    };
    const mc = buildVmArgs({ ...base, clusterNic: memberNic(3, 1) });
    expect(mc).to.include('socket,id=net1,mcast=239.193.0.3:20003,localaddr=127.0.0.1');
    expect(mc).to.include('virtio-net-pci,netdev=net1,id=nic1,mac=52:54:0c:00:03:02,bus=pci.0,addr=0x8');
    const iso = buildVmArgs({ ...base, clusterNic: { kind: 'isolated', mac: '52:54:0c:00:03:01' } });
    expect(iso).to.include('hubport,id=net1,hubid=0');
    expect(() => buildVmArgs({ ...base, clusterNic: { kind: 'mcast', mcast: '239.1.1.1:1', mac: '52:54:0c:00:03:01', localaddr: 'lo;x' } })).to.throw(UsageError);
  });
});

describe('clusters: quota for a batch', () => {
  it('GC_MAX_CLONES per user when no file limits clones; the whole batch is refused, naming the limit', () => {
    const q = { maxPerUser: 3 };
    checkCloneBatch(q, holders('alice', 'physics', 1), { user: 'alice', group: 'physics' }, 2);
    const msg = refusal(() => checkCloneBatch(q, holders('alice', 'physics', 2), { user: 'alice', group: 'physics' }, 2));
    expect(msg).to.equal('gc clone 2: refused, none created: max_clones=3 for user alice (gcd setting GC_MAX_CLONES) (2 live clones, 2 more asked)');
    // Another user's clones do not count.
    checkCloneBatch(q, holders('bob', 'physics', 9), { user: 'alice', group: 'physics' }, 3);
  });

  it('the quota file: user, group and system max_clones through policy.checkClone', () => {
    const cfg = cfgOf('users:', '  alice: {max_clones: 5}', 'groups:', '  physics: {max_clones: 4}', 'system:', '  max_clones: 10');
    const q = { config: cfg, maxPerUser: 1 }; // the file's user limit replaces GC_MAX_CLONES
    checkCloneBatch(q, holders('alice', 'physics', 2), { user: 'alice', group: 'physics' }, 2);
    expect(refusal(() => checkCloneBatch(q, holders('alice', 'physics', 2), { user: 'alice', group: 'physics' }, 3))).to.match(
      /^gc clone 3: refused, none created: max_clones=4 for group physics \(quotas\.yaml\) \(2 live clones, 3 more asked\)$/,
    );
    expect(refusal(() => checkCloneBatch(q, [...holders('bob', 'x', 9)], { user: 'alice', group: 'physics' }, 2))).to.match(/max_clones=10 for the system/);
    // A user without a file limit falls back to GC_MAX_CLONES.
    expect(refusal(() => checkCloneBatch(q, [], { user: 'carol', group: 'bio' }, 2))).to.match(/max_clones=1 for user carol \(gcd setting/);
    // max_clones: 0 forbids.
    const none = { config: cfgOf('defaults:', '  max_clones: 0'), maxPerUser: 8 };
    expect(refusal(() => checkCloneBatch(none, [], { user: 'dave', group: 'd' }, 1))).to.match(/max_clones=0 for user dave/);
  });

  it('a refusal carries its fields: the limit, on whom, how many asked and live, where it is set', () => {
    const cfg = cfgOf('groups:', '  physics: {max_clones: 4}');
    let err: unknown;
    try {
      checkCloneBatch({ config: cfg, maxPerUser: 8 }, holders('alice', 'physics', 2), { user: 'alice', group: 'physics' }, 3);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(QuotaError);
    expect((err as QuotaError).fields).to.deep.equal({ limit: 'max_clones', max: 4, entity: 'group physics', amount: 3, used: 2, source: 'quotas.yaml' });
  });

  it('GC_MAX_CLONES: default 8, whole numbers only', () => {
    expect(maxClonesSetting({})).to.equal(8);
    expect(maxClonesSetting({ GC_MAX_CLONES: '3' })).to.equal(3);
    expect(() => maxClonesSetting({ GC_MAX_CLONES: 'lots' })).to.throw(UsageError, /GC_MAX_CLONES/);
  });
});

describe('clusters: registry', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'copper-reg-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const clone = (id: number, over: Partial<CloneEntry> = {}): CloneEntry => ({
    id, vmId: cloneVmId('hn', id), generation: 1, parent: 0, snapshotId: 's1', diskBase: 's1', createdAt: 1, state: 'running', ...over,
  });

  it('allocates network indexes and the lowest free clone ids; persists and reloads', async () => {
    const r = await ClusterRegistry.load(dir);
    const a = r.ensureCluster('hn', 'alice', 'physics');
    const b = r.ensureCluster('other', 'bob', 'bio');
    expect([a.network, b.network]).to.deep.equal([0, 1]);
    expect(r.ensureCluster('hn', 'alice', 'physics')).to.equal(a);
    r.addClone(a, clone(1));
    r.addClone(a, clone(3));
    expect(r.freeIds(a, 3)).to.deep.equal([2, 4, 5]);
    expect(() => r.addClone(a, clone(3))).to.throw(/taken/);
    r.addSnapshot({ id: 's1', headnode: 'hn', createdAt: 1 });
    await r.save();
    const again = await ClusterRegistry.load(dir);
    expect(again.cluster('hn')!.clones.map((c) => c.id)).to.deep.equal([1, 3]);
    expect(again.findVm('hn.c3')!.clone.id).to.equal(3);
    expect(again.hasSnapshot('s1')).to.equal(true);
    // A dropped cluster frees its index, but only once it holds no clone.
    again.dropCluster('hn');
    expect(again.cluster('hn')).to.not.equal(undefined);
    again.removeClone(again.cluster('hn')!, 1);
    again.removeClone(again.cluster('hn')!, 3);
    again.dropCluster('hn');
    expect(again.ensureCluster('new', 'c', 'c').network).to.equal(0);
  });

  it('a corrupt file is a clear error', async () => {
    const r = await ClusterRegistry.load(dir);
    await r.save();
    await import('node:fs/promises').then((fs) => fs.writeFile(join(dir, 'registry.json'), '{"version": 1, "clusters": 3'));
    let msg = '';
    await ClusterRegistry.load(dir).catch((e: Error) => (msg = e.message));
    expect(msg).to.match(/registry\.json is corrupt/);
  });

  it('knows which snapshots are needed whole, which only for their disk, and which not at all', async () => {
    const r = await ClusterRegistry.load(dir);
    const c = r.ensureCluster('hn', 'alice', 'alice');
    // s1: the headnode's; s2: clone 1's (disk backs onto s1); s3: clone 1's again (onto s2).
    r.addSnapshot({ id: 's1', headnode: 'hn', createdAt: 1 });
    r.addSnapshot({ id: 's2', headnode: 'hn', parent: 's1', createdAt: 2 });
    r.addSnapshot({ id: 's3', headnode: 'hn', parent: 's2', createdAt: 3 });
    r.addSnapshot({ id: 'old', headnode: 'hn', createdAt: 0 });
    r.addClone(c, clone(1, { diskBase: 's3' }));
    r.addClone(c, clone(2, { generation: 2, parent: 1, snapshotId: 's2', diskBase: 's2' }));
    let n = r.needed();
    expect([...n.whole].sort()).to.deep.equal(['s1', 's2']);
    expect([...n.diskOnly].sort()).to.deep.equal(['s3']);
    // Clone 1 goes: s1's RAM is no longer mapped by anyone, its disk still is under s2.
    r.removeClone(c, 1);
    n = r.needed();
    expect([...n.whole]).to.deep.equal(['s2']);
    expect([...n.diskOnly]).to.deep.equal(['s1']);
    r.removeClone(c, 2);
    n = r.needed();
    expect(n.whole.size + n.diskOnly.size).to.equal(0);
  });
});

describe('clusters: gc clone|clones|kill|whoami formats', () => {
  it('--ttl takes seconds, units and HH:MM:SS', () => {
    expect(parseTtl('90')).to.equal(90);
    expect(parseTtl('15m')).to.equal(900);
    expect(parseTtl('2h')).to.equal(7200);
    expect(parseTtl('1d')).to.equal(86_400);
    expect(parseTtl('01:30:00')).to.equal(5400);
    expect(() => parseTtl('soon')).to.throw(UsageError, /--ttl soon: not a duration/);
    expect(() => parseTtl('0m')).to.throw(UsageError);
    expect(() => parseTtl('0')).to.throw(UsageError);
  });

  it('durations, the clones table and whoami', () => {
    expect([5, 65, 3700, 90_000].map(formatDuration)).to.deep.equal(['5s', '1m05s', '1h01m', '1d01h']);
    const t = formatClones(
      [{ id: 1, name: 'hn-c1', headnode: 'hn', generation: 1, parent: 'hn', state: 'running', address: '10.100.0.2', mac: 'm', createdAt: 0, uptimeSec: 65, pssMiB: 40.4, expiresAt: 60_000 }],
      { now: 30_000 },
    );
    expect(t).to.equal('ID  NAME   GEN  PARENT  STATE    ADDRESS     UPTIME  MEM  TTL\n1   hn-c1  1    hn      running  10.100.0.2  1m05s   40M  30s\n');
    expect(formatWhoami({ kind: 'clone', headnode: 'hn', id: 2, generation: 1, name: 'hn-c2', address: '10.100.0.3', parent: 'hn' })).to.equal(
      'COPPER_CLONE=1\nCOPPER_CLONE_ID=2\nCOPPER_GENERATION=1\nCOPPER_PARENT=hn\nCOPPER_HEADNODE=hn\nCOPPER_CLUSTER_IP=10.100.0.3\nCOPPER_CLUSTER_NAME=hn-c2\n',
    );
  });

  it('memory from smaps_rollup', () => {
    const m = parseSmapsRollup('Rss:              173640 kB\nPss:              134872 kB\nPrivate_Clean:         8 kB\nPrivate_Dirty:    110452 kB\n');
    expect(m).to.deep.equal({ rssMiB: 169.6, pssMiB: 131.7, privateMiB: 107.9 });
  });
});

describe('clusters: guest scripts', () => {
  it('clone.env is sourceable, one KEY=VALUE a line, COPPER_VM last', () => {
    const env = cloneEnvText({ id: 2, generation: 1, parent: 'hn', headnode: 'hn', address: '10.100.0.3', name: 'hn-c2', subnet: '10.100.0.0/24', vmId: 'hn.c2' });
    const r = spawnSync('sh', ['-c', `${env}\necho "$COPPER_CLONE $COPPER_CLONE_ID $COPPER_GENERATION $COPPER_CLUSTER_IP $COPPER_VM"`], { encoding: 'utf8' });
    expect(r.stdout).to.equal('1 2 1 10.100.0.3 hn.c2\n');
    expect(env.trimEnd().split('\n').pop()).to.equal('COPPER_VM=hn.c2');
  });

  it('the scripts are valid sh', async () => {
    for (const script of [HEADNODE_PREPARE, CLONE_IDENTITY]) {
      const r = spawnSync('sh', ['-n', '-c', script], { encoding: 'utf8' });
      expect(r.status, r.stderr).to.equal(0);
    }
    // The hosts rewrite keeps foreign lines and replaces an old block (run on a copy, ip stubbed).
    const d = await mkdtemp(join(tmpdir(), 'copper-hosts-'));
    try {
      const hosts = join(d, 'hosts');
      await import('node:fs/promises').then((fs) =>
        fs.writeFile(hosts, '127.0.0.1\tlocalhost\n# copper cluster: begin 10.100.9.0/24\n10.100.9.1\told\n# copper cluster: end\n10.0.0.9\tmine\n'),
      );
      const part = HEADNODE_PREPARE.slice(HEADNODE_PREPARE.indexOf('FIRST=')).split('[ -d /etc/copper ]')[0]!.replaceAll('/etc/hosts', hosts);
      const r = spawnSync('sh', ['-c', `HOSTS='${hostsBlock('hn', 0)}'\n${part}`], { encoding: 'utf8' });
      expect(r.status, r.stderr).to.equal(0);
      const out = await readFile(hosts, 'utf8');
      expect(out.startsWith('127.0.0.1\tlocalhost\n10.0.0.9\tmine\n# copper cluster: begin 10.100.0.0/24\n10.100.0.1\thn\n')).to.equal(true);
      expect(out).to.not.contain('old');
      // Idempotent: a second run leaves it as it is.
      spawnSync('sh', ['-c', `HOSTS='${hostsBlock('hn', 0)}'\n${part}`]);
      expect(await readFile(hosts, 'utf8')).to.equal(out);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
