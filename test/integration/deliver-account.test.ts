/**
 * Issue 13 item 8 (b): the `account` a guest sends cannot make root deliver files where that
 * account could not write. The headnode side of delivery (drivers/qemu/guest/deliver.py) is
 * run here as root exactly as the guest agent runs it in a headnode (python3 -I -S -c), on
 * this host, with the job's account `nobody`. Folders made root:root 0755 and 0700 stand for
 * /etc and /root (the host's own are not touched by a test).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deliverScript } from '../../src/drivers/qemu/deliver-script.js';

const NOBODY = 65534;

describe('output delivery as the job account (issue 13 item 8b)', function () {
  let dir: string;
  let etc: string;
  let rootHome: string;
  let home: string;
  let stage: string;
  let n = 0;

  before(function () {
    if (process.geteuid?.() !== 0) this.skip(); // delivery runs as root in the guest; so must this
    dir = mkdtempSync(join(tmpdir(), 'deliver-account-'));
    chmodSync(dir, 0o755);
    etc = join(dir, 'etc');
    mkdirSync(etc, { mode: 0o755 });
    writeFileSync(join(etc, 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
    rootHome = join(dir, 'root');
    mkdirSync(rootHome, { mode: 0o700 });
    home = join(dir, 'home-nobody');
    mkdirSync(home, { mode: 0o755 });
    chownSync(home, NOBODY, NOBODY);
    stage = join(dir, 'stage');
    mkdirSync(stage, { mode: 0o700 });
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Stage `text` as the host does and run deliver.py as root; status and stderr. */
  function deliver(account: string, dest: string, text = 'job output\n'): { status: number; stderr: string; staged: string } {
    const staged = join(stage, `out-${n++}`);
    writeFileSync(staged, text, { mode: 0o600 });
    const r = spawnSync('python3', ['-I', '-S', '-c', deliverScript(), staged, account, dest], { encoding: 'utf8' });
    return { status: r.status ?? -1, stderr: r.stderr, staged };
  }

  it('refuses an -o path in an /etc-like folder for a non-root account, writing nothing', function () {
    const r = deliver('nobody', join(etc, 'cron.d-job'));
    expect(r.status).to.equal(13);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(r.stderr).to.match(/account nobody may not write in .*\/etc \(Permission denied\)/);
    expect(readdirSync(etc)).to.deep.equal(['passwd'], 'no file and no temporary left');
    expect(existsSync(r.staged), 'the staged copy is gone').to.equal(false);
  });

  it('refuses to replace a root-owned file (/etc/passwd) for a non-root account', function () {
    const r = deliver('nobody', join(etc, 'passwd'), 'evil::0:0::/:/bin/sh\n');
    expect(r.status).to.equal(13);
    expect(readFileSync(join(etc, 'passwd'), 'utf8')).to.equal('root:x:0:0::/root:/bin/sh\n');
  });

  it('refuses an -o path under a /root-like folder', function () {
    const r = deliver('nobody', join(rootHome, '.bashrc'));
    expect(r.status).to.equal(13);
    expect(readdirSync(rootHome)).to.deep.equal([]);
  });

  it("delivers into the account's own folder, owned by it, mode 644", function () {
    const dest = join(home, 'job.o1');
    const r = deliver('nobody', dest, 'hello\n');
    expect(r.status, r.stderr).to.equal(0);
    expect(readFileSync(dest, 'utf8')).to.equal('hello\n');
    const st = lstatSync(dest);
    expect([st.uid, st.gid, st.mode & 0o777]).to.deep.equal([NOBODY, NOBODY, 0o644]);
  });

  it('replaces a symlink planted at the output path instead of writing through it', function () {
    const dest = join(home, 'trap.o1');
    symlinkSync(join(etc, 'passwd'), dest);
    lchownNobody(dest);
    const r = deliver('nobody', dest, 'mine\n');
    expect(r.status, r.stderr).to.equal(0);
    expect(lstatSync(dest).isSymbolicLink()).to.equal(false);
    expect(readFileSync(dest, 'utf8')).to.equal('mine\n');
    expect(readFileSync(join(etc, 'passwd'), 'utf8')).to.equal('root:x:0:0::/root:/bin/sh\n');
  });

  it('lets a job of account root write where root may (root is the user in their own headnode)', function () {
    const r = deliver('root', join(etc, 'rootjob.o1'));
    expect(r.status, r.stderr).to.equal(0);
    expect(readFileSync(join(etc, 'rootjob.o1'), 'utf8')).to.equal('job output\n');
  });

  it('refuses an account the headnode does not have', function () {
    const r = deliver('nosuchuser', join(home, 'x.o1'));
    expect(r.status).to.equal(3);
    expect(r.stderr).to.match(/no account nosuchuser in the headnode/);
  });

  function lchownNobody(p: string): void {
    spawnSync('chown', ['-h', `${NOBODY}:${NOBODY}`, p]);
  }
});
