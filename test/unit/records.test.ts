import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterRegistry } from '../../src/clusters/registry.js';
import { CLONE_RECORD, SNAPSHOT_META } from '../../src/vm/records.schema.js';
import { DriverError } from '../../src/errors.js';
import { readRecord } from '../../src/headnodes/record.js';
import { parseRecord, RecordError } from '../../src/json-record.js';

const META = {
  version: 1,
  id: 's1',
  headnode: 'hn',
  owner: 'alice',
  group: 'physics',
  createdAt: 1700000000000,
  pauseMs: 42,
  vm: { accel: 'tcg', memMiB: 512, vcpus: 1, maxVcpus: 4, clusterNic: { kind: 'mcast', mcast: '230.0.0.1:1234', mac: '52:54:00:00:00:01' } },
};

const HEADNODE = {
  version: 1,
  createdAt: 1,
  diskGen: 2,
  want: 'running',
  accel: 'tcg',
  boot: { base: '/img/base.qcow2' },
  spec: { name: 'hn', owner: 'alice', group: 'physics', memMiB: 512, vcpus: 1, diskGiB: 4 },
};

async function failure(p: Promise<unknown>): Promise<RecordError> {
  const e: unknown = await p.then(
    () => new Error('accepted'),
    (err: unknown) => err,
  );
  if (e instanceof RecordError) return e;
  throw e;
}

describe('on-disk JSON records are checked when read', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'copper-records-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('snapshot metadata: a good file reads as it was written, fields it does not know included', () => {
    const m = parseRecord('/s/meta.json', 'snapshot metadata', JSON.stringify({ ...META, later: 'kept' }), SNAPSHOT_META);
    expect(m).to.deep.equal({ ...META, later: 'kept' });
  });

  it('snapshot metadata: the freeze time in the guest clock is optional (older snapshots lack it); a non-number is refused', () => {
    const withClock = parseRecord('/s/meta.json', 'snapshot metadata', JSON.stringify({ ...META, frozenAtGuestMs: 1700000000123.456 }), SNAPSHOT_META);
    expect(withClock.frozenAtGuestMs).to.equal(1700000000123.456);
    expect(parseRecord('/s/meta.json', 'snapshot metadata', JSON.stringify(META), SNAPSHOT_META).frozenAtGuestMs).to.equal(undefined);
    expect(() => parseRecord('/s/meta.json', 'snapshot metadata', JSON.stringify({ ...META, frozenAtGuestMs: 'noon' }), SNAPSHOT_META)).to.throw(
      RecordError,
      /frozenAtGuestMs/,
    );
  });

  it('a record written before versions existed reads as version 1; an unknown version is refused naming the file', () => {
    const { version: _v, ...old } = META;
    expect(parseRecord('/s/meta.json', 'snapshot metadata', JSON.stringify(old), SNAPSHOT_META).version).to.equal(1);
    const oldClone = { cloneId: 'c1', snapshotId: 's1', headnode: 'hn', createdAt: 5 };
    expect(parseRecord('/c/clone.json', 'clone record', JSON.stringify(oldClone), CLONE_RECORD)).to.deep.equal({ version: 1, ...oldClone });
    const e = (() => {
      try {
        parseRecord('/s/meta.json', 'snapshot metadata', JSON.stringify({ ...META, version: 2 }), SNAPSHOT_META);
      } catch (err) {
        return err;
      }
    })();
    expect(e).to.be.instanceOf(RecordError).and.instanceOf(DriverError);
    expect((e as RecordError).message).to.equal('snapshot metadata /s/meta.json has unknown version 2 (this Copper reads version 1)');
    expect(e).to.include({ file: '/s/meta.json', kind: 'snapshot metadata' });
  });

  it('a wrong shape is refused with the file and the field, not a TypeError later', () => {
    const bad = { ...META, vm: { ...META.vm, memMiB: '512' } };
    expect(() => parseRecord('/s/meta.json', 'snapshot metadata', JSON.stringify(bad), SNAPSHOT_META)).to.throw(
      RecordError,
      /^snapshot metadata \/s\/meta\.json is corrupt: vm\.memMiB: .*number/,
    );
    const badNic = { ...META, vm: { ...META.vm, clusterNic: { kind: 'wifi', mac: 'x' } } };
    expect(() => parseRecord('/s/meta.json', 'snapshot metadata', JSON.stringify(badNic), SNAPSHOT_META)).to.throw(RecordError, /vm\.clusterNic/);
    expect(() => parseRecord('/c/clone.json', 'clone record', '[1,2]', CLONE_RECORD)).to.throw(RecordError, /is corrupt: not a JSON object/);
    expect(() => parseRecord('/c/clone.json', 'clone record', '{"cloneId":', CLONE_RECORD)).to.throw(RecordError, /is corrupt: not JSON/);
  });

  it('headnode records: good, old (no version), wrong shape', async () => {
    const file = join(dir, 'headnode.json');
    await writeFile(file, JSON.stringify(HEADNODE));
    expect(await readRecord(file, 'hn')).to.deep.equal(HEADNODE);
    const { version: _v, ...old } = HEADNODE;
    await writeFile(file, JSON.stringify(old));
    expect((await readRecord(file, 'hn')).version).to.equal(1);
    await writeFile(file, JSON.stringify({ ...HEADNODE, want: 'maybe' }));
    const e = await failure(readRecord(file, 'hn'));
    expect(e.message).to.match(new RegExp(`^headnode record ${file} is corrupt: want: `));
    expect(e.file).to.equal(file);
  });

  it('cluster registry: a wrong shape or version stops loading with the file named', async () => {
    const file = join(dir, 'registry.json');
    await writeFile(
      file,
      JSON.stringify({ version: 1, clusters: [{ headnode: 'hn', owner: 'a', group: 'a', network: 0, clones: [{ id: 1 }] }], snapshots: [] }),
    );
    expect((await failure(ClusterRegistry.load(dir))).message).to.match(/^cluster registry .*registry\.json is corrupt: clusters\.0\.clones\.0\.vmId: /);
    await writeFile(file, JSON.stringify({ version: 'two', clusters: [], snapshots: [] }));
    expect((await failure(ClusterRegistry.load(dir))).message).to.match(/has unknown version "two"/);
    await writeFile(file, JSON.stringify({ clusters: [], snapshots: [{ id: 's1', headnode: 'hn', createdAt: 1 }] }));
    expect((await ClusterRegistry.load(dir)).hasSnapshot('s1')).to.equal(true);
  });
});
