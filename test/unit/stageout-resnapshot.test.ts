import { expect } from 'chai';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import type { JobRecord, JobState } from '../../src/queue/job.js';
import type { JobTransition } from '../../src/queue/job-events.js';
import { JobStore } from '../../src/queue/job-store.js';
import { keysFor } from '../../src/queue/keys.js';
import { freshSnapshotForRelease } from '../../src/stageout/fresh-snapshot.js';
import { startTestRedis, type TestRedis } from '../helpers/env.js';
import { testRecord } from '../helpers/jobs.js';

const keys = keysFor('t');

describe('a released dependent moves to a fresh snapshot (resnapshot transition, real redis-server)', function () {
  let r: TestRedis;
  let store: JobStore;
  let driver: FakeDriver;
  let headnodes: Set<string>;
  let seq = 0;

  beforeEach(async function () {
    r = await startTestRedis();
    store = new JobStore(r.client, keys, 'srv');
    const deliverRoot = join(r.dir, 'deliver');
    mkdirSync(deliverRoot, { recursive: true });
    headnodes = new Set(['hn1']);
    driver = new FakeDriver({ deliverRoot, headnodes });
  });
  afterEach(async function () {
    await driver.close();
    await r.stop();
  });

  async function make(state: JobState, snapshotId: string): Promise<JobRecord> {
    const rec = testRecord(++seq, state, { snapshotId, holds: state === 'H' ? 's' : undefined });
    await store.create([rec]);
    return rec;
  }

  it('held tasks move with their references; the old snapshot goes with its last reference; the move is heard', async function () {
    const old = (await driver.snapshot('hn1')).id;
    const tasks = [await make('H', old), await make('H', old)];
    const heard: JobTransition[] = [];
    store.events.subscribe((t) => void heard.push(t));
    expect(await freshSnapshotForRelease(driver, store, 'hn1', tasks)).to.equal(undefined);
    const after = await Promise.all(tasks.map((t) => store.get(t.id)));
    const fresh = after[0]?.snapshotId ?? '';
    expect(fresh).to.not.equal(old);
    expect(after.map((t) => [t.state, t.snapshotId])).to.deep.equal([
      ['H', fresh],
      ['H', fresh],
    ]);
    const refs = await store.snapshotRefs();
    expect([refs.get(fresh), refs.has(old)]).to.deep.equal([2, false]);
    expect([...driver.snapshots]).to.deep.equal([fresh]);
    expect(heard.map((t) => [t.event, t.from, t.to])).to.deep.equal([
      ['resnapshot', 'H', 'H'],
      ['resnapshot', 'H', 'H'],
    ]);
  });

  it('a job deleted meanwhile (F) keeps its snapshot; a fresh snapshot no job took is released', async function () {
    const old = (await driver.snapshot('hn1')).id;
    const held = await make('H', old);
    const other = await make('Q', old); // another job still needs the old snapshot
    // gcqdel won the race: the record the caller read says H, the store says F.
    const del = await store.transition(held.id, 'delete', { comment: 'deleted' });
    expect(del.ok).to.equal(true);
    await freshSnapshotForRelease(driver, store, 'hn1', [held]);
    expect((await store.get(held.id)).snapshotId).to.equal(old);
    expect((await store.get(other.id)).snapshotId).to.equal(old);
    expect([...driver.snapshots]).to.deep.equal([old], 'the fresh snapshot was released, the old one kept');
    expect((await store.snapshotRefs()).get(old)).to.equal(2);
  });

  it('the headnode cannot be snapshotted: the job keeps its submission snapshot and the note says why', async function () {
    const old = (await driver.snapshot('hn1')).id;
    const held = await make('H', old);
    headnodes.delete('hn1');
    const note = await freshSnapshotForRelease(driver, store, 'hn1', [held]);
    expect(note)
      .to.match(/runs in its submission snapshot/)
      .and.match(/hn1/);
    expect((await store.get(held.id)).snapshotId).to.equal(old);
  });
});
