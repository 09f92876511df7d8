import { expect } from 'chai';
import { backgroundSnapshotExpected, snapshotRamFromEnv } from '../../src/vm/migration.js';
import { UsageError } from '../../src/errors.js';

describe('how a headnode snapshot freezes RAM', () => {
  it('expects background snapshots from Linux 5.19 (userfaultfd write-protect on shmem)', () => {
    expect(backgroundSnapshotExpected('6.1.0-56-amd64')).to.equal(true);
    expect(backgroundSnapshotExpected('5.19.0')).to.equal(true);
    expect(backgroundSnapshotExpected('5.18.19-arch1')).to.equal(false);
    expect(backgroundSnapshotExpected('4.19.0-27-amd64')).to.equal(false);
    expect(backgroundSnapshotExpected('garbage')).to.equal(false);
  });

  it('takes GC_SNAPSHOT_RAM=auto|copy and refuses anything else', () => {
    expect(snapshotRamFromEnv({})).to.equal('auto');
    expect(snapshotRamFromEnv({ GC_SNAPSHOT_RAM: 'copy' })).to.equal('copy');
    expect(snapshotRamFromEnv({ GC_SNAPSHOT_RAM: 'auto' })).to.equal('auto');
    expect(() => snapshotRamFromEnv({ GC_SNAPSHOT_RAM: 'fast' })).to.throw(UsageError, /^GC_SNAPSHOT_RAM=fast: must be 'auto' or 'copy'$/);
  });
});
