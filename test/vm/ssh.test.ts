import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GcdProcess, until, type ToolRun } from '../helpers/gcd-process.js';

/**
 * SSH into a headnode, end to end under TCG: an ordinary host account (made for the test, no
 * privileges) holds the owner's key and logs into the headnode with plain `ssh -p PORT
 * root@127.0.0.1`, where it runs gcqsub; a wrong key is refused; keys change while it runs;
 * a job's clone neither has the forward nor a listening sshd.
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';
const HN = 'ssh-hn';
// A range of our own: other tests may run gcd next to this one.
const PORTS = '23200-23299';

function sh(cmd: string, args: string[], opts: { input?: string } = {}): ToolRun {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 600_000, ...(opts.input !== undefined ? { input: opts.input } : {}) });
  return { stdout: r.stdout ?? '', stderr: r.stderr ?? '', status: r.status ?? -1 };
}

describe('SSH into your headnode: plain ssh from an unprivileged account @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  let home: string;
  let port: number;
  let hostKey: string;
  const user = `sshlane${process.pid % 100000}`;
  const key = (name: string) => join(home, '.ssh', name);
  const gc = (...args: string[]) => g.tool('gc', args);

  /** `ssh` run as the test's host account, never as root. */
  const ssh = (keyName: string, remote: string, extra: string[] = []): ToolRun & { ms: number } => {
    const t0 = Date.now();
    const r = sh('runuser', [
      '-u',
      user,
      '--',
      'ssh',
      '-i',
      key(keyName),
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'LogLevel=ERROR',
      '-o',
      'ConnectTimeout=30',
      ...extra,
      '-p',
      String(port),
      'root@127.0.0.1',
      remote,
    ]);
    return { ...r, ms: Date.now() - t0 };
  };

  before(async function () {
    home = mkdtempSync(join(tmpdir(), 'ssh-lane-home-'));
    rmSync(home, { recursive: true });
    const add = sh('useradd', ['-m', '-d', home, '-s', '/bin/sh', user]);
    expect(add.status, add.stderr).to.equal(0);
    for (const k of ['owner_key', 'other_key']) {
      const r = sh('runuser', ['-u', user, '--', 'sh', '-c', `mkdir -p -m 700 ~/.ssh && ssh-keygen -q -t ed25519 -N '' -C ${k} -f ~/.ssh/${k}`]);
      expect(r.status, r.stderr).to.equal(0);
    }
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_SSH_ADDR: '127.0.0.1', GC_SSH_PORTS: PORTS, GC_KILL_DELAY_MS: '2000' });
    await g.start();
    const c = gc('headnode', 'create', HN, '--owner', 'alice', '--mem', '384', '--ssh-key', key('owner_key.pub'));
    expect(c.status, c.stderr).to.equal(0);
    const s = gc('headnode', 'start', HN);
    expect(s.status, s.stderr + g.log.slice(-2000)).to.equal(0);
    const m = /127\.0\.0\.1:(\d+)/.exec(gc('headnode', 'list').stdout);
    expect(m, 'gc headnode list shows the SSH port').to.not.equal(null);
    port = Number(m![1]);
  });

  after(async function () {
    if (g) {
      gc('headnode', 'destroy', HN);
      await g.cleanup();
      expect(g.processesLeft(), 'no QEMU left for this state folder').to.equal('');
    }
    sh('userdel', ['-r', '-f', user]);
    rmSync(home, { recursive: true, force: true });
  });

  it("lists the port, the owner's key and the headnode's own host key", function () {
    expect(port).to.be.within(23200, 23299);
    const l = gc('headnode', 'ssh-key', 'list', HN);
    expect(l.status, l.stderr).to.equal(0);
    const fp = sh('ssh-keygen', ['-l', '-E', 'sha256', '-f', key('owner_key.pub')]).stdout.split(' ')[1];
    expect(l.stdout).to.contain(`ssh -p ${port} root@127.0.0.1`);
    expect(l.stdout).to.contain(`${fp}  owner_key`);
    const hk = /^host key: (SHA256:\S+)$/m.exec(l.stdout);
    expect(hk, l.stdout).to.not.equal(null);
    hostKey = hk![1];
  });

  it('the owner logs in from an unprivileged account and sees the host key gcd reported', async function () {
    // sshd starts in the background of copper-init (host key made on this first boot): the
    // first login may come a few seconds after `gc headnode start` returned.
    const t0 = Date.now();
    const first = await until(
      'a first SSH login',
      () => {
        const r = ssh('owner_key', 'hostname');
        return r.status === 0 ? r : undefined;
      },
      120_000,
    );
    const firstMs = Date.now() - t0;
    expect(first.stdout.trim()).to.equal(HN);
    // Strict host key checking against the fingerprint gcd printed: the headnode presents it.
    const scan = sh('ssh-keyscan', ['-p', String(port), '-t', 'ed25519', '127.0.0.1']);
    const line = scan.stdout.split('\n').find((x) => x.includes('ssh-ed25519'));
    expect(line, scan.stderr).to.not.equal(undefined);
    const known = join(home, '.ssh', 'known_hosts_strict');
    writeFileSync(known, line! + '\n');
    sh('chown', [user, known]);
    const fp = sh('ssh-keygen', ['-l', '-E', 'sha256', '-f', known]).stdout.split(' ')[1];
    expect(fp).to.equal(hostKey);
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = ssh('owner_key', 'true', ['-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${known}`]);
      expect(r.status, r.stderr).to.equal(0);
      times.push(r.ms);
    }
    times.sort((a, b) => a - b);
    console.log(`      ssh: first login ${firstMs} ms after start returned; login + 'true' median ${times[1]} ms (${times.join(', ')})`);
  });

  it('runs gcqsub over SSH and gets the job result back', function () {
    const t0 = Date.now();
    const r = ssh('owner_key', 'cd /root && id=$(gcqsub -W block=true -- hostname) && echo "id=$id" && cat "hostname.o${id%%.*}"');
    expect(r.status, r.stderr + g.log.slice(-3000)).to.equal(0);
    const id = /^id=(\d+)\.srv$/m.exec(r.stdout);
    expect(id, r.stdout).to.not.equal(null);
    // The job ran in a clone of this headnode, named <headnode>-<seq>.
    expect(r.stdout).to.contain(`\n${HN}-${id![1]}\n`);
    console.log(`      ssh: gcqsub -W block=true over SSH, job done in ${Date.now() - t0} ms`);
  });

  it("refuses a key that is not the owner's, and offers no password log-in", function () {
    const wrong = ssh('other_key', 'hostname');
    expect(wrong.status).to.equal(255);
    expect(wrong.stderr).to.contain('Permission denied (publickey).');
    const pw = ssh('other_key', 'hostname', ['-o', 'PreferredAuthentications=password,keyboard-interactive', '-o', 'PubkeyAuthentication=no']);
    expect(pw.status).to.equal(255);
    // The server's list of methods is publickey alone.
    expect(pw.stderr).to.contain('Permission denied (publickey).');
  });

  it('takes a key added while it runs and drops it when removed', function () {
    const add = gc('headnode', 'ssh-key', 'add', HN, key('other_key.pub'));
    expect(add.status, add.stderr).to.equal(0);
    expect(ssh('other_key', 'hostname').stdout.trim()).to.equal(HN);
    const fp = sh('ssh-keygen', ['-l', '-E', 'sha256', '-f', key('other_key.pub')]).stdout.split(' ')[1];
    const rm = gc('headnode', 'ssh-key', 'remove', HN, fp);
    expect(rm.status, rm.stderr).to.equal(0);
    expect(rm.stdout).not.to.contain('other_key');
    expect(ssh('other_key', 'hostname').status).to.equal(255);
    expect(ssh('owner_key', 'hostname').stdout.trim()).to.equal(HN);
    const missing = gc('headnode', 'ssh-key', 'add', HN, join(home, 'nope.pub'));
    expect(missing.status).to.not.equal(0);
    expect(missing.stderr).to.match(/nope\.pub/);
  });

  it("a clone neither forwards the headnode's port nor listens for SSH", async function () {
    const listening = ssh('owner_key', 'ss -Hltn "sport = :22" | wc -l');
    expect(Number(listening.stdout.trim()), 'sshd listens in the headnode').to.be.greaterThan(0);
    const sub = ssh('owner_key', 'cd /root && gcqsub -N sshclone -- sh -c \'ss -Hltn "sport = :22" | wc -l; sleep 20\'');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const seq = id.split('.')[0];
    // The clone's QEMU: restored from the snapshot (-incoming), in this state folder.
    const cloneQemu = await until(
      'the clone QEMU to run',
      () => {
        const ps = sh('pgrep', ['-a', '-f', 'qemu-system']).stdout.split('\n');
        return ps.find((l) => l.includes(g.stateDir) && l.includes('-incoming'));
      },
      300_000,
    );
    expect(cloneQemu).not.to.contain('hostfwd');
    // While the clone runs, the port still reaches the headnode, not the clone.
    const who = ssh('owner_key', 'hostname');
    expect(who.stdout.trim()).to.equal(HN);
    await until(
      'the job to finish',
      () => {
        const st = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
        if (st.status !== 0) return false;
        return (JSON.parse(st.stdout) as { Jobs: Record<string, { job_state: string }> }).Jobs[id]?.job_state === 'F';
      },
      300_000,
    );
    const out = ssh('owner_key', `cat /root/sshclone.o${seq}`);
    expect(out.stdout.trim(), 'sockets listening on 22 in the clone').to.equal('0');
  });
});
