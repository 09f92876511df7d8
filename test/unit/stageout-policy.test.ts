import { expect } from 'chai';
import { UsageError } from '../../src/errors.js';
import { parseQsub, type QsubContext, type QsubJob } from '../../src/pbs/qsub-options.js';
import { stageOutLimits, stageOutNote, stageOutRequest } from '../../src/stageout/policy.js';
import type { JobRecord } from '../../src/queue/job.js';

const ctx: QsubContext = {
  cwd: '/home/alice/work',
  env: { PATH: '/usr/bin:/bin' },
  user: 'alice',
  group: 'physics',
  headnode: 'hn',
  submitHost: 'hn',
  now: Date.now(),
  defaultQueue: 'workq',
  readFile: () => undefined,
};
const job = (argv: string[]): QsubJob => parseQsub(argv, ctx) as QsubJob;

describe('stage-out: -W stageout and the policy', function () {
  it('-W stageout takes paths (relative to the working directory) or none; repeated lists add up', function () {
    expect(job(['-W', 'stageout=res,/opt/x', '--', 'true']).spec.stageout).to.deep.equal(['/home/alice/work/res', '/opt/x']);
    expect(job(['-W', 'stageout=a', '-W', 'stageout=b,a', '--', 'true']).spec.stageout).to.deep.equal(['/home/alice/work/a', '/home/alice/work/b']);
    expect(job(['-W', 'stageout=none', '--', 'true']).spec.stageout).to.equal('none');
    expect(job(['-W', 'block=true,stageout=x', '--', 'true']).spec.stageout).to.deep.equal(['/home/alice/work/x']);
    expect(job(['--', 'true']).spec.stageout).to.equal(undefined);
    expect(() => job(['-W', 'stageout=a,,b', '--', 'true'])).to.throw(UsageError, /empty path/);
  });

  it('the request stages the working directory first, then the extra paths; none gives nothing', function () {
    const rec = { id: '7.srv', spec: { cwd: '/root/work/', headnode: 'hn', stageout: ['/opt/x', '/root/work'] } } as unknown as JobRecord;
    const req = stageOutRequest(rec, { capBytes: 10, keepMaxBytes: 20 }, '/state/undelivered');
    expect(req?.paths).to.deep.equal(['/root/work', '/opt/x']);
    expect(req?.account).to.equal('root');
    expect(req?.keepDir).to.equal('/state/undelivered/7.srv');
    expect(stageOutRequest({ ...rec, spec: { ...rec.spec, stageout: 'none' } }, { capBytes: 10, keepMaxBytes: 20 }, '/u')).to.equal(undefined);
  });

  it('the cap comes from GC_STAGEOUT_MAX; a bad value is refused with its name', function () {
    expect(stageOutLimits({ GC_STAGEOUT_MAX: '1mb' }).capBytes).to.equal(1024 * 1024);
    expect(stageOutLimits({ GC_STAGEOUT_MAX: '5000' }).capBytes).to.equal(5000);
    expect(() => stageOutLimits({ GC_STAGEOUT_MAX: 'lots' })).to.throw(UsageError, /GC_STAGEOUT_MAX/);
  });

  it('the comment names conflicts and where the excess is; a clean stage-out says nothing', function () {
    expect(stageOutNote({ placed: 3, bytes: 9, conflicts: [], conflictCount: 0, errors: [] })).to.equal(undefined);
    const note = stageOutNote({
      placed: 3,
      bytes: 9,
      conflicts: ['/a', '/b', '/c', '/d'],
      conflictCount: 5,
      errors: [],
      excess: { entries: 2, bytes: 100, keptAt: '/keep/x.tar' },
    });
    expect(note).to.include('/a, /b, /c and 2 more').and.include('kept on the host at /keep/x.tar');
  });

  it('excess kept on a grid node is said to be on that node', function () {
    const note = stageOutNote({
      placed: 1,
      bytes: 1,
      conflicts: [],
      conflictCount: 0,
      errors: [],
      excess: { entries: 1, bytes: 5, keptAt: '/n/keep', keptOn: 'n7' },
    });
    expect(note).to.include('kept on node n7 at /n/keep');
  });
});
