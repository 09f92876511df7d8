import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { GcdProcess, until } from '../helpers/gcd-process.js';
import { closedPort, SmtpRecorder } from '../helpers/smtp-recorder.js';

interface JsonJob {
  job_state: string;
  Exit_status?: number;
  comment?: string;
  mail_error?: string;
  Mail_Points?: string;
  Mail_Users?: string;
}

function job(g: GcdProcess, id: string): JsonJob {
  const r = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
  if (r.status !== 0) throw new Error(`gcqstat failed (${r.status}): ${r.stderr}`);
  return (JSON.parse(r.stdout) as { Jobs: Record<string, JsonJob> }).Jobs[id]!;
}

function submit(g: GcdProcess, args: string[]): string {
  const r = g.tool('gcqsub', ['--headnode', 'hn1', ...args], { cwd: '/tmp' });
  expect(r.status, r.stderr).to.equal(0);
  expect(r.stderr).to.not.match(/mail/i, 'no "no mail is sent" warning any more');
  return r.stdout.trim();
}

const finished = (g: GcdProcess, id: string): Promise<JsonJob> =>
  until(`${id} finished`, () => {
    const j = job(g, id);
    return j.job_state === 'F' ? j : undefined;
  });

/** Job mail's own Redis keys (an array's notes): none may stay once the array has ended. */
const mailKeys = (g: GcdProcess): string =>
  spawnSync('redis-cli', ['-s', join(g.stateDir, 'redis', 'redis.sock'), '--scan', '--pattern', '*:mail:*'], { encoding: 'utf8' }).stdout.trim();

const gcdEnv = (smtpUrl: string): NodeJS.ProcessEnv => ({
  GC_DRIVER: 'fake',
  GC_FAKE_HEADNODES: 'hn1:alice:physics',
  GC_LOCK_MS: '3000',
  GC_KILL_DELAY_MS: '500',
  GC_SERVER_NAME: 'srv',
  GC_SMTP_URL: smtpUrl,
});

describe('job mail (-m/-M) through a real SMTP server process (gcd, test-double driver)', function () {
  let smtp: SmtpRecorder;
  let g: GcdProcess;

  afterEach(async function () {
    await g?.cleanup();
    await smtp?.stop();
  });

  describe('with the SMTP server up', function () {
    beforeEach(async function () {
      smtp = await SmtpRecorder.start();
      g = new GcdProcess(gcdEnv(smtp.url));
      await g.start();
    });

    it("-m be -M: a begin and an end message to each address, with the job's facts", async function () {
      const id = submit(g, ['-N', 'calc', '-m', 'be', '-M', 'bob@example.org,carol', '-l', 'walltime=00:05:00', '--', 'sh', '-c', 'sleep 1; exit 3']);
      expect(id).to.equal('1.srv');
      const done = await finished(g, id);
      expect(done.Exit_status).to.equal(3);
      expect(done.Mail_Points).to.equal('be');
      expect(done.Mail_Users).to.equal('bob@example.org,carol');
      const mails = await until('two messages', () => (smtp.about(id).length >= 2 ? smtp.about(id) : undefined));
      expect(mails).to.have.length(2);
      const begin = mails.find((m) => /begun execution/.test(m.subject))!;
      const end = mails.find((m) => /execution terminated/.test(m.subject))!;
      expect(begin, 'begin message').to.not.equal(undefined);
      expect(end, 'end message').to.not.equal(undefined);
      for (const m of mails) {
        expect(m.from).to.equal('copper@srv');
        expect(m.to).to.deep.equal(['bob@example.org', 'carol@srv']);
        expect(m.body).to.contain('PBS Job Id: 1.srv');
        expect(m.body).to.contain('Job Name:   calc');
        expect(m.body).to.contain(`Owner:      alice@${hostname()}`);
        expect(m.body).to.contain('Queue:      workq');
      }
      expect(begin.body).to.not.contain('Exit_status');
      expect(end.body).to.contain('Exit_status=3');
      expect(end.body).to.contain('comment=Job run, exit 3');
      expect(end.body).to.match(/resources_used\.walltime=00:00:0[1-9] \(asked: 00:05:00\)/);
      expect(end.body).to.contain('Output_Path=hn1:/tmp/calc.o1');
      expect(end.body).to.contain('Error_Path=hn1:/tmp/calc.e1');
    });

    it('default -m a: nothing for a job that ends by itself, one abort message when walltime kills one; -m n: nothing', async function () {
      const ok = submit(g, ['-N', 'fine', '--', 'sh', '-c', 'exit 0']);
      await finished(g, ok);
      const quiet = submit(g, ['-N', 'quiet', '-m', 'n', '-l', 'walltime=00:00:01', '--', 'sleep', '30']);
      await finished(g, quiet);
      const killed = submit(g, ['-N', 'slow', '-l', 'walltime=00:00:01', '--', 'sleep', '30']);
      const k = await finished(g, killed);
      expect(k.Exit_status).to.equal(-29);
      const [abort] = await until('the abort message', () => (smtp.about(killed).length ? smtp.about(killed) : undefined));
      expect(abort!.subject).to.match(/aborted by copper/);
      expect(abort!.to).to.deep.equal(['alice@srv'], 'the owner by default');
      expect(abort!.body).to.contain('Aborted by Copper');
      expect(abort!.body).to.contain('Exit_status=-29');
      expect(abort!.body).to.match(/comment=walltime 1s exceeded/);
      expect(abort!.body).to.match(/resources_used\.walltime=00:00:0\d \(asked: 00:00:01\)/);
      // Mail is sent in job order here; by the time the third job's arrived, the others' would have.
      expect(smtp.messages.map((m) => m.subject)).to.have.length(1);
    });

    it('gcqdel of a running job with -m a sends an abort message; -m e alone sends the end', async function () {
      const del = submit(g, ['-N', 'victim', '--', 'sleep', '30.02']);
      await until('running', () => job(g, del).job_state === 'R');
      const ends = submit(g, ['-N', 'ender', '-m', 'e', '--', 'sh', '-c', 'exit 1']);
      await finished(g, ends);
      const d = g.tool('gcqdel', [del]);
      expect(d.status, d.stderr).to.equal(0);
      await finished(g, del);
      const [a] = await until('abort message', () => (smtp.about(del).length ? smtp.about(del) : undefined));
      expect(a!.body).to.contain('comment=deleted by gcqdel while running');
      const [e] = await until('end message', () => (smtp.about(ends).length ? smtp.about(ends) : undefined));
      expect(e!.subject).to.match(/execution terminated/);
      expect(e!.body).to.contain('Exit_status=1');
    });

    it('an array sends one begin and one end message for the whole array, none per task', async function () {
      const id = submit(g, ['-N', 'sweep', '-J', '1-4', '-m', 'abe', '--', 'sh', '-c', 'sleep 0.3; exit 0']);
      expect(id).to.equal('1[].srv');
      const done = await finished(g, id);
      expect(done.Exit_status).to.equal(0);
      await until('end message', () => smtp.about(id).some((m) => /execution terminated/.test(m.subject)));
      // A marker job after the array: once its mail is in, any stray task mail would be too.
      const marker = submit(g, ['-N', 'marker', '-m', 'e', '--', 'true']);
      await until('marker mail', () => smtp.about(marker).length > 0);
      const all = smtp.messages.filter((m) => !m.subject.includes(marker));
      expect(all.map((m) => m.subject)).to.deep.equal([`PBS JOB ${id} sweep: begun execution`, `PBS JOB ${id} sweep: execution terminated`]);
      const end = all[1]!;
      expect(end.body).to.contain('Job Array: 4 tasks');
      expect(end.body).to.contain('Exit_status=0');
      expect(end.body).to.contain('Output_Path=hn1:/tmp/sweep.o1.<index>');
      expect(mailKeys(g)).to.equal('');
    });

    it('an array whose last task is killed by walltime sends one abort message for the array (default -m a)', async function () {
      const id = submit(g, ['-N', 'part', '-J', '1-3', '-l', 'walltime=00:00:02', '--', 'sh', '-c', 'if [ "$PBS_ARRAY_INDEX" = 2 ]; then sleep 30; fi']);
      const done = await finished(g, id);
      expect(done.Exit_status).to.not.equal(0);
      const [m] = await until('the abort message', () => (smtp.about(id).length ? smtp.about(id) : undefined));
      expect(m!.subject).to.equal(`PBS JOB ${id} part: aborted by copper`);
      expect(m!.body).to.contain('Job Array: 3 tasks');
      const marker = submit(g, ['-N', 'marker', '-m', 'e', '--', 'true']);
      await until('marker mail', () => smtp.about(marker).length > 0);
      expect(smtp.messages).to.have.length(2, "the array's abort and the marker's end, nothing per task");
      expect(mailKeys(g)).to.equal('');
    });

    it('a -r n job lost with a crashed gcd gets one abort message, from the gcd that ends it at start', async function () {
      const lost = submit(g, ['-N', 'lost', '-r', 'n', '--', 'sleep', '40.05']);
      await until('running', () => job(g, lost).job_state === 'R');
      await g.kill9();
      expect(smtp.about(lost)).to.have.length(0, 'nothing before the crash: default -m a, no begin');
      await g.start();
      const [m] = await until('the abort message', () => (smtp.about(lost).length ? smtp.about(lost) : undefined));
      expect(m!.subject).to.equal(`PBS JOB ${lost} lost: aborted by copper`);
      expect(m!.body).to.contain('Exit_status=-3');
      expect(m!.body).to.match(/comment=gcd stopped while the job ran; not rerunnable/);
      expect(job(g, lost).Exit_status).to.equal(-3);
    });

    it("a slow SMTP server does not delay the job's end", async function () {
      await g.cleanup();
      await smtp.stop();
      smtp = await SmtpRecorder.start({ delayMs: 6000 });
      g = new GcdProcess(gcdEnv(smtp.url));
      await g.start();
      const t0 = Date.now();
      const r = g.tool('gcqsub', ['--headnode', 'hn1', '-m', 'be', '-W', 'block=true', '--', 'sh', '-c', 'exit 4'], { cwd: '/tmp' });
      const took = Date.now() - t0;
      expect(r.status, r.stderr).to.equal(4);
      expect(took).to.be.below(5000, 'the job ended without waiting for the begin message');
      await until('both messages', () => smtp.about('1.srv').length === 2, 30_000);
      expect(job(g, '1.srv').mail_error).to.equal(undefined);
    });
  });

  describe('with the SMTP server down', function () {
    beforeEach(async function () {
      g = new GcdProcess(gcdEnv(`smtp://127.0.0.1:${await closedPort()}`));
      await g.start();
    });

    it("leaves the job's result unchanged and shows the failure in gcqstat -f", async function () {
      const r = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'nomail', '-m', 'abe', '-W', 'block=true', '--', 'sh', '-c', 'echo out; exit 5'], { cwd: '/tmp' });
      expect(r.status, r.stderr).to.equal(5);
      const j = await until('mail_error', () => {
        const x = job(g, '1.srv');
        return x.mail_error ? x : undefined;
      });
      expect(j.job_state).to.equal('F');
      expect(j.Exit_status).to.equal(5);
      expect(j.comment).to.equal('Job run, exit 5');
      expect(j.mail_error).to.match(/^(begin|end) mail to alice@srv not sent: .*ECONNREFUSED/);
      const full = g.tool('gcqstat', ['-x', '-f', '1.srv']).stdout;
      expect(full).to.match(/mail_error = (begin|end) mail to alice@srv not sent/);
      await until("the failure in gcd's log", () => g.log.includes('job mail not sent'));
    });
  });

  describe("through the host MTA's sendmail interface (msmtp, a Debian MTA)", function () {
    let home: string;
    beforeEach(async function () {
      smtp = await SmtpRecorder.start();
      // msmtp reads ~/.msmtprc: gcd's HOME points it at the test SMTP server.
      home = mkdtempSync(join(tmpdir(), 'copper-msmtp-'));
      writeFileSync(join(home, '.msmtprc'), `account default\nhost 127.0.0.1\nport ${smtp.port}\nauth off\ntls off\n`);
      chmodSync(join(home, '.msmtprc'), 0o600);
      // An empty GC_SMTP_URL means no relay: the sendmail program.
      g = new GcdProcess({ ...gcdEnv(''), HOME: home, GC_SENDMAIL: '/usr/bin/msmtp', GC_MAIL_FROM: 'grid@example.org' });
      await g.start();
    });
    afterEach(function () {
      rmSync(home, { recursive: true, force: true });
    });

    it('sends the end message through sendmail, from the configured address', async function () {
      const r = g.tool('gcqsub', ['--headnode', 'hn1', '-N', 'viamta', '-m', 'e', '-M', 'dave@example.org', '-W', 'block=true', '--', 'true'], { cwd: '/tmp' });
      expect(r.status, r.stderr).to.equal(0);
      const [m] = await until('the message', () => (smtp.about('1.srv').length ? smtp.about('1.srv') : undefined));
      expect(m!.from).to.equal('grid@example.org');
      expect(m!.to).to.deep.equal(['dave@example.org']);
      expect(m!.subject).to.equal('PBS JOB 1.srv viamta: execution terminated');
      expect(m!.body).to.contain('Exit_status=0');
      expect(job(g, '1.srv').mail_error).to.equal(undefined);
    });
  });

  describe('with neither a relay nor a sendmail program', function () {
    beforeEach(async function () {
      g = new GcdProcess({ ...gcdEnv(''), GC_SENDMAIL: '/nonexistent/sendmail' });
      await g.start();
    });

    it('an aborted job still ends as it should; gcqstat -f says how to configure mail', async function () {
      const id = submit(g, ['-N', 'nomta', '-l', 'walltime=00:00:01', '--', 'sleep', '30']);
      const j = await until('mail_error', () => {
        const x = job(g, id);
        return x.job_state === 'F' && x.mail_error ? x : undefined;
      });
      expect(j.Exit_status).to.equal(-29);
      expect(j.mail_error).to.equal(
        'abort mail to alice@srv not sent: /nonexistent/sendmail: no such program; install an MTA or set GC_SMTP_URL / GC_SENDMAIL',
      );
    });
  });
});
