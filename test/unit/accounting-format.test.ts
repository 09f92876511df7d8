import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccountingReader } from '../../src/accounting/accounting-log.js';
import { findJobHistory, jobUsage } from '../../src/accounting/job-history.js';
import type { Actor } from '../../src/scheduler/actor.js';
import { accountingLine, accountingTime, hms, parseAccountingLine, parseSizeKiB } from '../../src/accounting/record-format.js';
import { efficiencyReport } from '../../src/server/commands/gcseff.js';
import { parseCommandUsage } from '../../src/drivers/qemu/command-usage.js';
import { parseMetricsAddr } from '../../src/metrics/server.js';
import type { JobRecord } from '../../src/queue/job.js';
import { oomComment } from '../../src/scheduler/oom-words.js';

const t0 = new Date(2026, 10, 28, 6, 40, 1).getTime();
const rec: JobRecord = {
  id: '12.srv', seq: 12, state: 'F', queuedAt: t0, startedAt: t0 + 5000, endedAt: t0 + 65_000, runCount: 1, exitStatus: 0, cputSec: 30, memKiB: 131072,
  spec: {
    argv: ['x'], name: 'my job', cwd: '/root', env: {}, user: 'alice', group: 'physics', headnode: 'hn', queue: 'workq', priority: 0,
    walltimeSec: 3600, join: 'n', rerunnable: true, resources: { ncpus: 2, memMiB: 512 }, submitHost: 'hn',
  },
};

describe('accounting records, efficiency and guest usage (unit)', function () {
  it('writes PBS\'s line layout and reads it back, a name with spaces kept in one field', function () {
    const line = accountingLine('E', rec, t0 + 65_000);
    expect(line.startsWith(`${accountingTime(t0 + 65_000)};E;12.srv;user=alice group=physics `)).to.equal(true);
    expect(accountingTime(t0)).to.equal('11/28/2026 06:40:01');
    const p = parseAccountingLine(line)!;
    expect(p.attrs.jobname).to.equal('my job');
    expect(p.attrs['resources_used.walltime']).to.equal('00:01:00');
    expect(p.attrs['resources_used.cput']).to.equal('00:00:30');
    expect(p.attrs['resources_used.mem']).to.equal('131072kb');
    expect(p.attrs['exec_host']).to.equal('hn-12/0*2');
    expect(p.attrs['Resource_List.walltime']).to.equal('01:00:00');
    expect(p.time.getTime()).to.equal(t0 + 65_000);
    expect(hms(90061)).to.equal('25:01:01');
    expect(parseSizeKiB('512mb')).to.equal(524288);
  });

  it('gcseff: CPU efficiency = cput / (walltime x ncpus), memory = peak / requested, also from an E record alone', function () {
    const fromRecord = efficiencyReport(jobUsage({ id: rec.id, record: rec, lines: [] })!);
    expect(fromRecord).to.contain('CPU Efficiency: 25.00% of 00:02:00 core-walltime');
    expect(fromRecord).to.contain('Memory Efficiency: 25.00% of 512.00 MB');
    const fromFile = efficiencyReport(jobUsage({ id: rec.id, lines: [parseAccountingLine(accountingLine('E', rec, t0 + 65_000))!] })!);
    expect(fromFile).to.contain('State: COMPLETED (exit code 0)');
    expect(fromFile).to.contain('CPU Efficiency: 25.00% of 00:02:00 core-walltime');
    expect(fromFile).to.contain('Memory Efficiency: 25.00% of 512.00 MB');
  });

  it('reads run-job\'s usage line and words an OOM kill with the peak and the limit', function () {
    const u = parseCommandUsage('cpu_usec=2500000 mem_peak=367001600 oom_kill=1\n')!;
    expect(u).to.deep.equal({ cputSec: 2.5, memPeakKiB: 358400, oomKills: 1 });
    expect(parseCommandUsage('cpu_usec= mem_peak= oom_kill=0')).to.equal(undefined);
    expect(oomComment({ exitCode: null, signal: 9 }, u, 384)).to.match(/^killed: out of memory \(peak 350 MiB of the clone's 384 MiB of RAM\)/);
    expect(oomComment({ exitCode: 137, signal: null }, u, 384)).to.match(/^Job run, exit 137: out of memory, the kernel killed one of its processes/);
    expect(oomComment({ exitCode: 0, signal: null }, { ...u, oomKills: 0 }, 384)).to.equal(undefined);
  });

  it('GC_METRICS_ADDR: HOST:PORT, [v6]:PORT, off', function () {
    expect(parseMetricsAddr('127.0.0.1:9464')).to.deep.equal({ host: '127.0.0.1', port: 9464 });
    expect(parseMetricsAddr('[::1]:9464')).to.deep.equal({ host: '::1', port: 9464 });
    expect(parseMetricsAddr(undefined)).to.equal(undefined);
    expect(parseMetricsAddr('off')).to.equal(undefined);
    expect(() => parseMetricsAddr('9464')).to.throw(/expected HOST:PORT/);
    expect(() => parseMetricsAddr('h:99999')).to.throw(/expected HOST:PORT/);
  });
});

describe('job history from the accounting files (unit)', function () {
  it('a guest sees only its owner\'s expired jobs; the admin sees all; an unknown id is unknown', async function () {
    const dir = mkdtempSync(join(tmpdir(), 'copper-acct-'));
    try {
      writeFileSync(join(dir, '20261128'), ['Q', 'S', 'E'].map((t) => accountingLine(t as 'Q' | 'S' | 'E', rec, t0 + 65_000)).join('\n') + '\n');
      const expired = { parseId: (t: string) => `${t.replace(/\.srv$/, '')}.srv`, tryGet: async () => undefined };
      const reader = new AccountingReader(dir);
      const guest = (owner: string): Actor => ({ kind: 'guest', identity: { vmId: 'hn', kind: 'headnode', headnode: 'hn', owner, group: 'g' } });
      const mine = await findJobHistory(expired, reader, guest('alice'), '12');
      expect(mine.lines.map((l) => l.type).join('')).to.equal('QSE');
      await findJobHistory(expired, reader, guest('bob'), '12').then(() => expect.fail('bob saw alice\'s job'), (e: Error) => expect(e.message).to.equal('Unknown Job Id 12'));
      expect((await findJobHistory(expired, reader, { kind: 'admin' }, '12.srv')).lines).to.have.length(3);
      await findJobHistory(expired, reader, { kind: 'admin' }, '13').then(() => expect.fail('13 found'), (e: Error) => expect(e.message).to.equal('Unknown Job Id 13'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
