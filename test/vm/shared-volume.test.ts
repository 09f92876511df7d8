import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sftpSandboxCommand, sftpSlotsDir } from '../../src/vm/vm-args.js';
import { GcdProcess, until } from '../helpers/gcd-process.js';

/**
 * The shared volume, end to end with real VMs under TCG: each user's <stateDir>/shared/<owner>/
 * is /shared in their headnode and in every clone of it (sshfs over a QEMU guestfwd to a
 * bubblewrap-confined sftp-server), so a job leaves files that outlive its clone.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';
const QUOTA_MIB = 32;

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

describe('shared volume: /shared in the headnode and its clones, one folder per user @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;

  const gc = (...args: string[]) => g.tool('gc', args);
  const inside = (hn: string, script: string, timeoutSec = 600) => g.inHeadnode(hn, script, timeoutSec);
  const mounted = (hn: string) => inside(hn, 'grep " /shared fuse.sshfs " /proc/mounts').status === 0;

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000' });
    // alice's /shared has a quota (a volume of its own); bob's is a plain folder.
    mkdirSync(join(g.stateDir, 'config'), { recursive: true });
    writeFileSync(join(g.stateDir, 'config', 'quotas.yaml'), `users:\n  alice: {shared_bytes: ${QUOTA_MIB}mb}\n`);
    await g.start();
    g.startHeadnodes(
      [
        ['alice-hn', 'alice'],
        ['bob-hn', 'bob'],
      ],
      384,
    );
    // copper-init mounts /shared after the network, possibly just after the agent answers.
    for (const hn of ['alice-hn', 'bob-hn']) await until(`/shared in ${hn}`, () => mounted(hn), 60_000);
  });

  after(async function () {
    if (!g) return;
    for (const name of ['alice-hn', 'bob-hn']) gc('headnode', 'destroy', name);
    await g.cleanup();
    const left = g.processesLeft();
    expect(left, 'no qemu, bwrap or sftp-server left running for this state folder').to.equal('');
  });

  it("keeps the owner's folder root-only on the host", function () {
    expect(statSync(join(g.stateDir, 'shared')).mode & 0o777).to.equal(0o700);
    expect(statSync(join(g.stateDir, 'shared', 'alice')).mode & 0o777).to.equal(0o700);
    expect(statSync(join(g.stateDir, 'shared', 'bob')).mode & 0o777).to.equal(0o700);
  });

  it('a job reads what the headnode left in /shared and leaves a file that outlives its clone', async function () {
    const prep = inside(
      'alice-hn',
      'echo input-from-headnode > /shared/input.txt && printf "%s\\n" "cat /shared/input.txt > /shared/result.txt" "echo written-by-\\$(hostname) >> /shared/result.txt" > /root/job.sh && echo ok',
    );
    expect(prep.stdout, prep.stderr).to.equal('ok\n');
    const t0 = Date.now();
    const sub = inside('alice-hn', 'cd /root && gcqsub -W block=true sh /root/job.sh');
    const jobMs = Date.now() - t0;
    expect(sub.status, sub.stderr + g.log.slice(-3000)).to.equal(0);
    const id = sub.stdout.trim();
    const seq = id.split('.')[0];
    const st = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
    const job = (JSON.parse(st.stdout) as { Jobs: Record<string, { Exit_status: number }> }).Jobs[id];
    expect(job.Exit_status, inside('alice-hn', `cat /root/sh.e${seq}`).stdout).to.equal(0);
    // The clone is gone before the file is checked.
    await until("the job's clone to be destroyed", () => readdirSafe(join(g.stateDir, 'clones')).length === 0, 60_000);
    const expected = `input-from-headnode\nwritten-by-alice-hn-${seq}\n`;
    const seen = inside('alice-hn', 'cat /shared/result.txt');
    expect(seen.stdout, seen.stderr).to.equal(expected);
    expect(readFileSync(join(g.stateDir, 'shared', 'alice', 'result.txt'), 'utf8')).to.equal(expected);
    // The headnode was snapshotted (gcqsub) with /shared mounted, and it still works after.
    expect(mounted('alice-hn')).to.equal(true);
    const after = inside('alice-hn', 'echo again > /shared/after.txt && cat /shared/after.txt');
    expect(after.stdout).to.equal('again\n');
    console.log(`      job wall time (gcqsub -W block=true, TCG): ${jobMs} ms`);
  });

  it("a second job sees the first job's file, and jobs can write as non-root accounts", function () {
    const add = inside('alice-hn', 'id nobody >/dev/null && echo ok');
    expect(add.stdout).to.equal('ok\n');
    const sub = inside('alice-hn', 'cd /root && gcqsub -W block=true -- sh -c "cat /shared/result.txt | wc -l > /shared/count.txt"');
    expect(sub.status, sub.stderr).to.equal(0);
    expect(readFileSync(join(g.stateDir, 'shared', 'alice', 'count.txt'), 'utf8')).to.equal('2\n');
    // Any account of the headnode may use the volume; on the host everything belongs to root.
    const w = inside('alice-hn', 'setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c "echo by-nobody > /shared/nobody.txt" && cat /shared/nobody.txt');
    expect(w.stdout, w.stderr).to.equal('by-nobody\n');
    expect(statSync(join(g.stateDir, 'shared', 'alice', 'nobody.txt')).uid).to.equal(0);
  });

  it("another user's headnode sees only its own folder", function () {
    const bob = inside('bob-hn', 'echo bobs > /shared/bob.txt; ls -A /shared; test -e /shared/result.txt && echo LEAK; true');
    expect(bob.stdout).to.equal('bob.txt\n');
    expect(readFileSync(join(g.stateDir, 'shared', 'bob', 'bob.txt'), 'utf8')).to.equal('bobs\n');
    expect(existsSync(join(g.stateDir, 'shared', 'alice', 'bob.txt'))).to.equal(false);
    const alice = inside('alice-hn', 'test -e /shared/bob.txt && echo LEAK; echo done');
    expect(alice.stdout).to.equal('done\n');
  });

  it("a guest flooding /shared stops at its owner's shared_bytes; another user's /shared still works", function () {
    const flood = inside('alice-hn', `dd if=/dev/zero of=/shared/flood bs=1M count=${QUOTA_MIB + 16} 2>&1; echo rc=$?`);
    // SFTP v3 has no "disk full": the host's ENOSPC reaches the guest as a failed write.
    expect(flood.stdout).to.match(/rc=[1-9]/);
    const held = statSync(join(g.stateDir, 'shared', 'alice', 'flood')).blocks * 512;
    expect(held).to.be.at.most(QUOTA_MIB * 1024 * 1024);
    const bob = inside('bob-hn', `dd if=/dev/zero of=/shared/big bs=1M count=${QUOTA_MIB + 16} 2>/dev/null && rm /shared/big && echo ok`);
    expect(bob.stdout, bob.stderr).to.equal('ok\n');
    const again = inside('alice-hn', 'rm -f /shared/flood && echo fine > /shared/after-flood.txt && cat /shared/after-flood.txt');
    expect(again.stdout, again.stderr).to.equal('fine\n');
  });

  it('the sandboxed sftp-server shows nothing of the host but the folder', function () {
    if (spawnSync('sh', ['-c', 'command -v sftp']).status !== 0) this.skip();
    // The layout gcd uses: <state>/shared/<owner>, the session slots in <state>/run/sftp.
    const state = mkdtempSync(join(tmpdir(), 'copper-sftp-'));
    const dir = join(state, 'shared', 'alice');
    mkdirSync(dir, { recursive: true });
    mkdirSync(sftpSlotsDir(dir), { recursive: true });
    try {
      writeFileSync(join(dir, 'mine.txt'), 'x');
      const batch = join(state, 'batch');
      writeFileSync(batch, 'ls -1 /\nls -1 /shared\n-ls /etc\n-get /etc/passwd /dev/null\n-mkdir /escape\n-ls /lib/x86_64-linux-gnu\n');
      const r = spawnSync('sftp', ['-b', batch, '-D', sftpSandboxCommand(dir)], { encoding: 'utf8', timeout: 20_000 });
      rmSync(batch, { force: true });
      expect(r.status, r.stderr).to.equal(0);
      const out = r.stdout;
      expect(out).to.contain('/shared/mine.txt');
      // The root holds only what the server needs to run; /etc/passwd is the sandbox's one line.
      const root = out
        .split('sftp> ls -1 /shared')[0]
        .split('\n')
        .filter((l) => l.startsWith('/'))
        .sort();
      expect(root).to.deep.equal(['/dev', '/etc', '/lib', '/lib64', '/sftp-server', '/shared']);
      expect(out).to.match(/\/lib\/x86_64-linux-gnu\/libc\.so\.6\s*$/m);
      expect(r.stderr).to.match(/mkdir "\/escape": Failure|Couldn't create directory/);
      expect(existsSync(join(dir, 'escape'))).to.equal(false);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });
});
