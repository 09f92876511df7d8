import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { GcdProcess } from '../helpers/gcd-process.js';

/**
 * Stage-out with real clones under TCG (issue 11 items 1-2): what a job writes under its working
 * directory is in the headnode before the job is F, however it ended. One headnode, several jobs.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

interface QstatJob {
  job_state: string;
  Exit_status?: number;
  comment?: string;
}

describe("stage-out: a job's files come home before F @vm", function () {
  this.timeout(1_500_000);
  let g: GcdProcess;
  const inside = (script: string) => g.inHeadnode('hn', script);
  const ok = (script: string): string => {
    const r = inside(script);
    expect(r.status, `${script}\n${r.stderr}`).to.equal(0);
    return r.stdout;
  };
  const qstat = (id: string): QstatJob | undefined =>
    (JSON.parse(g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]).stdout) as { Jobs: Record<string, QstatJob> }).Jobs[id];
  const waitDone = async (id: string): Promise<QstatJob> => {
    for (let i = 0; i < 1200; i++) {
      const j = qstat(id);
      if (j?.job_state === 'F') return j;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`job ${id} did not finish`);
  };
  const submit = (script: string): string => ok(script).trim().split('\n').pop() as string;

  before(async function () {
    // A 1 MiB cap for the whole gcd: the cap test writes 2 MiB, the others a few bytes.
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000', GC_STAGEOUT_MAX: '1mb' });
    await g.start();
    g.startHeadnodes([['hn', 'alice']], 384);
  });
  after(async function () {
    if (!g) return;
    g.tool('gc', ['headnode', 'destroy', 'hn']);
    await g.cleanup();
    expect(g.processesLeft()).to.equal('');
  });

  it("the issue's example: out.txt and res/a.dat are in the headnode when block=true returns, with content, owner, mode and mtime; links stay links; -W stageout adds a path", function () {
    const job = [
      'echo result > out.txt; chmod 640 out.txt; mkdir -p res .hidden; echo 42 > res/a.dat; echo h > .hidden/h',
      'ln -s /etc/shadow shadow-link; mkfifo pipe; echo old > old.txt; touch -d @1000000000 old.txt',
      'mkdir -p /opt/extra; echo e > /opt/extra/e.txt; echo not-asked > /opt/other.txt',
    ].join('; ');
    const sub = inside(`mkdir -p /root/work && cd /root/work && gcqsub -W block=true -W stageout=/opt/extra -- sh -c '${job}'`);
    expect(sub.status, sub.stderr).to.equal(0);
    const out = ok(
      [
        'cd /root/work',
        'cat out.txt res/a.dat .hidden/h /opt/extra/e.txt',
        'stat -c "%n %U %G %a" out.txt res/a.dat res',
        'stat -c "%n %Y" old.txt',
        '[ -L shadow-link ] && echo "link $(readlink shadow-link)"',
        '[ -e pipe ] || echo "no pipe"',
        '[ -e /opt/other.txt ] || echo "no other"',
      ].join('; '),
    );
    expect(out).to.equal(
      [
        'result',
        '42',
        'h',
        'e',
        'out.txt root root 640',
        'res/a.dat root root 644',
        'res root root 755',
        'old.txt 1000000000',
        'link /etc/shadow',
        'no pipe',
        'no other',
        '',
      ].join('\n'),
    );
    // Nothing was kept on the host for it: the link was never followed there.
    expect(existsSync(`${g.stateDir}/undelivered`)).to.equal(false);
  });

  it('jobs as another account, a conflict, the size cap, a walltime kill, stageout=none', async function () {
    ok(
      'id bob >/dev/null 2>&1 || useradd -m bob; mkdir -p /home/bob/w /root/c /root/cap /root/wt /root/none && chown bob: /home/bob/w && echo v1 > /root/c/data.txt',
    );
    // Submitted by bob in the headnode: his job runs as bob and his files come home as bob's.
    const bob = submit(`cd /home/bob/w && setpriv --reuid=bob --regid=$(id -g bob) --init-groups gcqsub -- sh -c 'echo mine > b.txt; chmod 600 b.txt'`);
    // The user changes data.txt in the headnode while the job (which also writes it) runs.
    // pre.txt is written just before the snapshot: not the user's change since it, so the job's
    // version replaces it (the freeze time is exact, in the headnode's clock).
    const conflict = submit(
      `cd /root/c && echo pre > pre.txt && gcqsub -- sh -c 'sleep 4; echo job > data.txt; echo job > pre.txt; echo new > new.txt' && echo user > /root/c/data.txt`,
    );
    const cap = submit(`cd /root/cap && gcqsub -- sh -c 'echo small > small.txt; head -c 2097152 /dev/urandom > big.bin; md5sum big.bin > big.md5'`);
    const wall = submit(`cd /root/wt && gcqsub -l walltime=00:00:08 -- sh -c 'echo partial > wt.txt; sleep 300'`);
    const none = submit(`cd /root/none && gcqsub -W stageout=none -- sh -c 'echo x > none.txt'`);

    const b = await waitDone(bob);
    expect(b.Exit_status, b.comment).to.equal(0);
    expect(ok('cd /home/bob/w && cat b.txt && stat -c "%U %a" b.txt')).to.equal('mine\nbob 600\n');

    const c = await waitDone(conflict);
    expect(c.Exit_status, c.comment).to.equal(0);
    expect(ok(`cd /root/c && cat data.txt data.txt.copper-${conflict} new.txt pre.txt; ls pre.txt.copper-* 2>/dev/null || echo "no pre copy"`)).to.equal(
      'user\njob\nnew\njob\nno pre copy\n',
    );
    expect(c.comment).to.include('/root/c/data.txt').and.include('copper-');

    const k = await waitDone(cap);
    expect(k.Exit_status, k.comment).to.equal(0);
    expect(ok('cd /root/cap && cat small.txt; [ -e big.bin ] || echo "no big"')).to.equal('small\nno big\n');
    const kept = /kept on the host at (\S+)/.exec(k.comment ?? '')?.[1];
    expect(kept, k.comment).to.be.a('string');
    const list = spawnSync('tar', ['-tf', kept as string], { encoding: 'utf8' });
    expect(list.stdout.split('\n')).to.include('root/cap/big.bin');

    const w = await waitDone(wall);
    expect(w.comment).to.match(/walltime/);
    expect(ok('cat /root/wt/wt.txt')).to.equal('partial\n');

    const n = await waitDone(none);
    expect(n.Exit_status).to.equal(0);
    expect(ok('[ -e /root/none/none.txt ] || echo absent')).to.equal('absent\n');
  });

  it('an afterok dependent reads the file its parent wrote', async function () {
    const parent = submit(`mkdir -p /root/d && cd /root/d && gcqsub -- sh -c 'sleep 2; echo from-parent > p.txt'`);
    const child = submit(`cd /root/d && gcqsub -N child -W depend=afterok:${parent} -- cat /root/d/p.txt`);
    expect((await waitDone(parent)).Exit_status).to.equal(0);
    const c = await waitDone(child);
    expect(c.Exit_status, c.comment).to.equal(0);
    expect(ok(`cat /root/d/child.o${child.split('.')[0]}`)).to.equal('from-parent\n');
  });
});
