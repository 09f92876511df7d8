/**
 * Issue 13 item 10: a job's script is stored once per submission, not once per array task,
 * and Redis has a maxmemory that refuses writes cleanly. Real redis-server (INFO memory and
 * MEMORY USAGE measure it); the last test runs gcd as a process with a 3 MiB maxmemory and
 * fills it with gcqsub until it refuses.
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FakeDriver } from '../../src/drivers/fake/fake-driver.js';
import { keysFor } from '../../src/queue/keys.js';
import { JobStore } from '../../src/queue/job-store.js';
import { RedisFullError, isRedisOom, redisMemory } from '../../src/redis/memory-guard.js';
import type { Scheduler } from '../../src/scheduler/scheduler.js';
import type { TestRedis } from '../helpers/env.js';
import { GcdProcess } from '../helpers/gcd-process.js';
import { testRecord, testSpec } from '../helpers/jobs.js';
import { startSchedulerFixture, stopSchedulerFixture } from '../helpers/scheduler.js';

const KiB = 1024;

/** A shell script of about `bytes` bytes: comment padding, then what it does. */
function bigScript(bytes: number, body: string): string {
  const line = `# ${'x'.repeat(76)}\n`;
  return `#!/bin/sh\n${line.repeat(Math.ceil(bytes / line.length))}${body}\n`;
}

describe('Redis memory (issue 13 item 10)', function () {
  describe('scripts stored once', function () {
    let r: TestRedis;
    let driver: FakeDriver;
    let sched: Scheduler;
    let deliverRoot: string;
    beforeEach(async function () {
      ({ r, driver, sched, deliverRoot } = await startSchedulerFixture());
    });
    afterEach(async function () {
      await stopSchedulerFixture({ sched, driver, r });
    });

    it('a 1000-task array of a 100 KiB script takes about one script of Redis memory', async function () {
      const script = bigScript(100 * KiB, 'echo task $PBS_ARRAY_INDEX');
      const keys = keysFor('copper');
      const before = (await redisMemory(r.client)).used;
      const indices = Array.from({ length: 1000 }, (_, i) => i);
      const recs = await sched.submit([testSpec({ argv: [], script, name: 'big' })], { array: { indices }, hold: true });
      const after = (await redisMemory(r.client)).used;
      const delta = after - before;
      const parentBytes = Number(await r.client.call('MEMORY', 'USAGE', keys.job(recs[0].id), 'SAMPLES', '0'));
      let taskBytes = 0;
      for (const t of recs.slice(1)) taskBytes += Number(await r.client.call('MEMORY', 'USAGE', keys.job(t.id), 'SAMPLES', '0'));
      const result = {
        tasks: 1000,
        scriptBytes: script.length,
        redisDeltaBytes: delta,
        arrayRecordBytes: parentBytes,
        taskRecordBytesAvg: Math.round(taskBytes / 1000),
        deltaInScripts: +(delta / script.length).toFixed(2),
        ratioToCopyPerTask: +(delta / (1000 * script.length)).toFixed(4),
      };
      console.log(`      ${JSON.stringify(result)}`);
      expect(parentBytes).to.be.at.least(script.length, 'the array record holds the script');
      expect(result.taskRecordBytesAvg).to.be.below(2 * KiB, 'a task record holds no copy of it');
      // Without sharing this is >= 1000 scripts (100 MB); with it, one script plus small records.
      expect(result.ratioToCopyPerTask).to.be.below(0.05);
      expect(await r.client.hget(keys.job(recs[5].id), 'scriptOf')).to.equal(recs[0].id);
    });

    it('each task still runs the script', async function () {
      const script = bigScript(10 * KiB, 'echo "task $PBS_ARRAY_INDEX ran"');
      const recs = await sched.submit([testSpec({ argv: [], script, name: 'arr' })], { array: { indices: [1, 2, 3] } });
      for (const t of recs.slice(1)) {
        const done = await sched.waitFor(t.id);
        expect(done.exitStatus, done.comment).to.equal(0);
        expect(done.spec.script, 'not in the task record').to.equal(undefined);
        expect(readFileSync(join(deliverRoot, 'hn1', `/tmp/arr.o1.${t.arrayIndex}`), 'utf8')).to.equal(`task ${t.arrayIndex} ran\n`);
      }
    });

    it('a write Redis refuses for maxmemory is told apart, and nothing of the batch is written', async function () {
      const { used } = await redisMemory(r.client);
      await r.client.config('SET', 'maxmemory', String(used));
      try {
        const store = new JobStore(r.client, keysFor('oomtest'), 'srv');
        const err = await store.create([testRecord(1, 'Q'), testRecord(2, 'Q', { spec: testSpec({ script: 'x'.repeat(64 * KiB) }) })]).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isRedisOom(err), String(err)).to.equal(true);
        expect(await r.client.keys('oomtest:*')).to.deep.equal([], 'the MULTI wrote nothing');
        const refused = await sched.submit([testSpec()]).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(refused).to.be.instanceOf(RedisFullError);
        expect((refused as Error).message).to.match(/^job store full: Redis uses .* of its maxmemory/);
      } finally {
        await r.client.config('SET', 'maxmemory', '0');
      }
    });
  });

  describe('gcd with a small maxmemory', function () {
    let g: GcdProcess;
    before(async function () {
      g = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_SERVER_NAME: 'srv', GC_REDIS_MAXMEMORY_MIB: '3' });
      await g.start();
    });
    after(async function () {
      await g.cleanup();
    });

    it('refuses a submission with one line once Redis is nearly full; gcd and the queued jobs stay', async function () {
      expect(readFileSync(join(g.stateDir, 'redis', 'redis.conf'), 'utf8')).to.match(/^maxmemory 3mb$/m);
      writeFileSync(join(g.stateDir, 'job.sh'), bigScript(200 * KiB, 'echo hi'));
      const accepted: string[] = [];
      let refusal: { stderr: string; status: number } | undefined;
      for (let i = 0; i < 40 && !refusal; i++) {
        const s = g.tool('gcqsub', ['--headnode', 'hn1', '-h', 'job.sh']);
        if (s.status === 0) accepted.push(s.stdout.trim());
        else refusal = s;
      }
      expect(refusal, 'a submission was refused').to.not.equal(undefined);
      console.log(`      accepted ${accepted.length} submissions of 200 KiB, then: ${refusal!.stderr.trim()}`);
      expect(accepted.length).to.be.greaterThan(2);
      expect(refusal!.stderr.trim().split('\n')).to.have.length(1);
      // Mostly the 90% check; a submission that crosses maxmemory itself is refused by Redis, as cleanly.
      expect(refusal!.stderr).to.match(/job store full: Redis (uses .* of its maxmemory 3\.0 MiB|refused the write)/);
      expect(refusal!.status).to.equal(3);
      // gcd is up and every accepted job is there, held, intact.
      expect(g.proc!.exitCode).to.equal(null);
      const st = g.tool('gcqstat', []);
      expect(st.status, st.stderr).to.equal(0);
      for (const id of accepted) expect(st.stdout).to.contain(id.split('.')[0]);
      const full = g.tool('gcqstat', ['-f', accepted[0]]);
      expect(full.stdout).to.match(/job_state = H/);
      // The room kept below maxmemory lets jobs still change state: each is deleted (F), then
      // forgotten (-x), which frees the room, and a later submission is taken again.
      for (const id of accepted) {
        const d = g.tool('gcqdel', [id]);
        expect(d.status, d.stderr).to.equal(0);
        const x = g.tool('gcqdel', ['-x', id]);
        expect(x.status, x.stderr).to.equal(0);
      }
      const again = g.tool('gcqsub', ['--headnode', 'hn1', '-h', 'job.sh']);
      expect(again.status, again.stderr).to.equal(0);
    });
  });
});
