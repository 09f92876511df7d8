import { expect } from 'chai';
import { composeMail } from '../../src/notify/mail/message.js';
import { endedBySystem, endKind } from '../../src/notify/mail/notifier.js';
import { mailSettings } from '../../src/notify/mail/mail-settings.js';
import { loadSettings, SettingError } from '../../src/config/settings.js';
import type { JobRecord } from '../../src/queue/job.js';

const record = (over: Partial<JobRecord> = {}): JobRecord => ({
  id: '7.srv',
  seq: 7,
  state: 'F',
  queuedAt: 1_000,
  runCount: 1,
  spec: {
    argv: ['true'],
    name: 'fit',
    cwd: '/home/alice/run',
    env: {},
    user: 'alice',
    group: 'users',
    headnode: 'hn1',
    queue: 'short',
    priority: 0,
    join: 'n',
    rerunnable: true,
    resources: { ncpus: 1, memMiB: 0 },
    submitHost: 'hn1',
    walltimeSec: 600,
  },
  ...over,
});

describe('job mail: which message, and what it says', function () {
  it('an ending gets an abort message if asked for, else an end message if asked for, else none', function () {
    expect(endKind('a', true)).to.equal('abort');
    expect(endKind('a', false)).to.equal(undefined);
    expect(endKind('e', true)).to.equal('end', '-m e still hears of a job the system killed');
    expect(endKind('ae', true)).to.equal('abort', 'one message per ending, not two');
    expect(endKind('abe', false)).to.equal('end');
    expect(endKind('b', false)).to.equal(undefined);
    expect(endKind('n', true)).to.equal(undefined);
  });

  it('an end message carries exit status, comment, walltime used against asked, peak memory, output paths', function () {
    const m = composeMail(
      'end',
      record({
        startedAt: 10_000,
        endedAt: 75_400,
        exitStatus: 2,
        comment: 'Job run, exit 2',
        memKiB: 52_345,
        cputSec: 61.6,
        outputPath: '/home/alice/run/fit.o7',
        errorPath: '/home/alice/run/fit.e7',
      }),
      'srv',
    );
    expect(m.subject).to.equal('PBS JOB 7.srv fit: execution terminated');
    expect(m.text.split('\n')).to.include.members([
      'PBS Job Id: 7.srv',
      'Job Name:   fit',
      'Owner:      alice@hn1',
      'Queue:      short',
      'Execution terminated',
      'Exit_status=2',
      'comment=Job run, exit 2',
      'resources_used.walltime=00:01:05 (asked: 00:10:00)',
      'resources_used.mem=52345kb',
      'resources_used.cput=00:01:02',
      'Output_Path=hn1:/home/alice/run/fit.o7',
      'Error_Path=hn1:/home/alice/run/fit.e7',
    ]);
  });

  it('a job that never ran says so; joined output names one file for both', function () {
    const m = composeMail(
      'abort',
      record({ endedAt: 5_000, exitStatus: -1, comment: 'job failed to run: no snapshot', spec: { ...record().spec, join: 'oe', walltimeSec: undefined } }),
      'srv',
    );
    expect(m.text).to.contain('Aborted by Copper\n');
    expect(m.text).to.contain('resources_used.walltime=never ran (asked: none)');
    expect(m.text).to.contain('Output_Path=hn1:/home/alice/run/fit.o7\nError_Path=hn1:/home/alice/run/fit.o7');
  });

  it('a begin message has no end facts', function () {
    const m = composeMail('begin', record({ state: 'R', startedAt: 10_000 }), 'srv');
    expect(m.text).to.not.contain('Exit_status');
    expect(m.text).to.not.contain('resources_used');
  });

  it('a job the system ended is an abort: by its end reason, else (older records) by a negative status', function () {
    expect(endedBySystem(record({ endReason: 'exit', exitStatus: 3 }))).to.equal(false);
    for (const why of ['walltime', 'deleted', 'failed', 'lost'] as const) expect(endedBySystem(record({ endReason: why, exitStatus: 0 })), why).to.equal(true);
    expect(endedBySystem(record({ exitStatus: 3 }))).to.equal(false);
    expect(endedBySystem(record({ exitStatus: -29 }))).to.equal(true);
  });

  it('refuses a relay setting that is no SMTP URL, and a From that is no address, in one line', function () {
    expect(() => loadSettings({ GC_SMTP_URL: 'relay.example.org:25' })).to.throw(
      SettingError,
      /^GC_SMTP_URL=relay.example.org:25: must be a smtp:\/\/ or smtps:\/\/ URL$/,
    );
    expect(() => loadSettings({ GC_SMTP_URL: 'http://relay:25' })).to.throw(SettingError, /must be a smtp:\/\/ or smtps:\/\/ URL/);
    expect(() => loadSettings({ GC_MAIL_FROM: 'copper' })).to.throw(SettingError, /^GC_MAIL_FROM=copper: not a mail address/);
  });

  it('mail settings default to sendmail, from copper@<mail domain>, the domain being the server name', function () {
    expect(mailSettings(loadSettings({ GC_SERVER_NAME: 'srv' }))).to.deep.equal({
      smtpUrl: undefined,
      sendmailPath: '/usr/sbin/sendmail',
      from: 'copper@srv',
      domain: 'srv',
    });
    expect(mailSettings(loadSettings({ GC_SERVER_NAME: 'srv', GC_MAIL_DOMAIN: 'example.org', GC_SMTP_URL: 'smtp://relay:25' }))).to.deep.equal({
      smtpUrl: 'smtp://relay:25',
      sendmailPath: '/usr/sbin/sendmail',
      from: 'copper@example.org',
      domain: 'example.org',
    });
  });
});
