import { expect } from 'chai';
import { GcdProcess, until } from '../helpers/gcd-process.js';
import { SmtpRecorder } from '../helpers/smtp-recorder.js';

/**
 * Job mail from a real headnode and a real clone under TCG: a script with `#PBS -m be -M`
 * submitted inside the headnode gets its begin and end messages at the test's SMTP server,
 * with the clone's peak memory and the output path the output was really delivered to.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

describe('job mail from real clones @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  let smtp: SmtpRecorder;

  before(async function () {
    smtp = await SmtpRecorder.start();
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_SMTP_URL: smtp.url, GC_MAIL_FROM: 'grid@example.org' });
    await g.start();
    g.startHeadnodes([['hn', 'alice']], 384);
  });
  after(async function () {
    if (g) {
      g.tool('gc', ['headnode', 'destroy', 'hn']);
      await g.cleanup();
      expect(g.processesLeft()).to.equal('');
    }
    await smtp?.stop();
  });

  it('#PBS -m be -M in a script: begin and end messages with exit status, memory and where the output went', async function () {
    const script = ['#!/bin/sh', '#PBS -N mailed', '#PBS -m be', '#PBS -M alice@example.org', '#PBS -l walltime=00:10:00', 'echo working', 'exit 6'].join('\n');
    const sub = g.inHeadnode('hn', `mkdir -p /root/m && cd /root/m && printf '%s\\n' '${script.replace(/'/g, "'\\''")}' > job.sh && gcqsub job.sh`);
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const seq = id.split('.')[0];
    const mails = await until('begin and end messages', () => (smtp.about(id).length >= 2 ? smtp.about(id) : undefined), 600_000);
    expect(mails.map((m) => m.subject)).to.deep.equal([`PBS JOB ${id} mailed: begun execution`, `PBS JOB ${id} mailed: execution terminated`]);
    const end = mails[1];
    expect(end.from).to.equal('grid@example.org');
    expect(end.to).to.deep.equal(['alice@example.org']);
    expect(end.body).to.contain('Exit_status=6');
    expect(end.body).to.match(/resources_used\.walltime=\d\d:\d\d:\d\d \(asked: 00:10:00\)/);
    const mem = /resources_used\.mem=(\d+)kb/.exec(end.body);
    expect(mem, 'peak memory in the message').to.not.equal(null);
    // The job's own peak (its cgroup in the clone), not the clone VM's: above nothing, below the clone's RAM.
    expect(Number(mem![1]))
      .to.be.above(0, 'the job used some memory')
      .and.below(512 * 1024, 'less than the clone has');
    expect(end.body).to.contain(`Output_Path=hn:/root/m/mailed.o${seq}`);
    expect(g.inHeadnode('hn', `cat /root/m/mailed.o${seq}`).stdout).to.equal('working\n');
  });
});
