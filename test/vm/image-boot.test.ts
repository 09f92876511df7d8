import { expect } from 'chai';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient, type ExecStatus } from '../../src/vm/agent.js';
import { detectAccel } from '../../src/vm/accel.js';
import { buildVmArgs } from '../../src/vm/vm-args.js';
import { buildImage, guestKernelCmdline, GUEST_CLONE_INIT, GUEST_RUN_JOB, type ImageInfo } from '../../src/image/image.js';

/**
 * Boots the default image the way a headnode boots (shared RAM file on /dev/shm, overlay on
 * the base qcow2) and checks what the rest of Copper relies on inside the guest: the agent,
 * python3, the guestfwd API channel with the guest CLI, run-job and clone-init.
 * The image is cached in $GC_STATE_DIR (default /var/tmp/copper-test): the first run builds it.
 */
describe('headnode image boots under QEMU @vm', function () {
  this.timeout(180_000);
  const stateDir = process.env.GC_STATE_DIR ?? '/var/tmp/copper-test';
  let image: ImageInfo;
  let dir = '';
  let ramFile = '';
  let qemu: ChildProcess | undefined;
  let agent: AgentClient | undefined;
  let api: Server | undefined;
  const requests: Record<string, unknown>[] = [];
  let bootMs = 0;

  const run = async (path: string, args: string[], input?: Buffer): Promise<ExecStatus> => {
    if (!agent) throw new Error('no agent');
    return agent.run(path, args, { timeoutMs: 60_000, ...(input ? { input } : {}) });
  };
  const text = (b: Buffer | null): string => (b ?? Buffer.alloc(0)).toString('utf8');

  before(async function () {
    this.timeout(900_000); // a first build runs debootstrap
    image = await buildImage({ stateDir, log: (l) => process.stderr.write(`      image: ${l}\n`) });
    dir = await mkdtemp(join(tmpdir(), 'gc-boot-'));
    ramFile = `/dev/shm/gc-boot-test-${process.pid}.ram`;
    const disk = join(dir, 'disk.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', image.disk, '-F', 'qcow2', disk]);

    const apiSocket = join(dir, 'api.sock');
    api = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const parsed = JSON.parse(body) as Record<string, unknown>;
        requests.push(parsed);
        res.setHeader('content-type', 'application/json');
        if (parsed.tool === 'gcqsub' && parsed.files === undefined) {
          res.end(JSON.stringify({ needFile: 'job.sh' }));
          return;
        }
        const files = parsed.files === undefined ? '' : JSON.stringify(parsed.files);
        res.end(JSON.stringify({ stdout: `fake ${String(parsed.tool)} ${JSON.stringify(parsed.argv)}${files}\n`, stderr: 'note\n', exitCode: 7 }));
      });
    });
    await new Promise<void>((resolve) => api!.listen(apiSocket, resolve));

    const args = buildVmArgs({
      vmId: 'boottest',
      accel: detectAccel(),
      memMiB: 512,
      vcpus: 1,
      ramFile,
      ramShare: true,
      disk,
      kernel: image.kernel,
      initrd: image.initrd,
      append: guestKernelCmdline({ hostname: 'boottest' }),
      qmpSocket: join(dir, 'qmp.sock'),
      qgaSocket: join(dir, 'qga.sock'),
      consoleSocket: join(dir, 'console.sock'),
      consoleLog: join(dir, 'console.log'),
      apiSocket,
    });
    const logFd = openSync(join(dir, 'qemu.log'), 'w');
    const started = Date.now();
    qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    const alive = (): boolean => qemu?.exitCode === null && qemu.signalCode === null;
    try {
      agent = await AgentClient.connect(join(dir, 'qga.sock'), { deadline: Date.now() + 30_000, isAlive: alive });
      await agent.waitReady(Date.now() + 150_000);
    } catch (err) {
      const qlog = await readFile(join(dir, 'qemu.log'), 'utf8').catch(() => '');
      const con = await readFile(join(dir, 'console.log'), 'utf8').catch(() => '');
      throw new Error(`guest agent never answered: ${String(err)}\nqemu.log:\n${qlog}\nconsole tail:\n${con.slice(-3000)}`);
    }
    bootMs = Date.now() - started;
    process.stderr.write(`      boot to guest agent: ${(bootMs / 1000).toFixed(1)} s (${detectAccel()})\n`);
  });

  after(async () => {
    agent?.destroy();
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      const exited = new Promise((resolve) => qemu!.once('exit', resolve));
      qemu.kill('SIGKILL');
      await exited;
    }
    await new Promise<void>((resolve) => (api ? api.close(() => resolve()) : resolve()));
    if (ramFile) await rm(ramFile, { force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs python3 through guest-exec', async () => {
    const st = await run('/usr/bin/python3', ['--version']);
    expect(st.exitCode).to.equal(0);
    expect(text(st.out) + text(st.err)).to.match(/^Python 3\.11/);
  });

  it('reaches gcd through guestfwd with the guest CLI', async () => {
    const st = await run('/usr/local/bin/gcqstat', ['-a', 'x y']);
    expect(text(st.err)).to.equal('note\n');
    expect(text(st.out)).to.equal('fake gcqstat ["-a","x y"]\n');
    expect(st.exitCode).to.equal(7);
    const req = requests.at(-1)!;
    expect(req.tool).to.equal('gcqstat');
    expect(req.account).to.equal('root');
    expect(req.cwd).to.be.a('string');
  });

  it('the guest CLI sends a file gcd asks for', async () => {
    const st = await run('/bin/sh', ['-c', 'mkdir -p /root/w && cd /root/w && printf "echo hi\\n" > job.sh && gcqsub job.sh']);
    expect(text(st.out)).to.equal('fake gcqsub ["job.sh"]{"job.sh":"echo hi\\n"}\n');
    expect(st.exitCode).to.equal(7);
    expect(requests.at(-1)!.cwd).to.equal('/root/w');
  });

  it('run-job runs as another user in its own process group', async () => {
    const st = await run(GUEST_RUN_JOB, ['--job', 'j3', '--user', 'nobody', '--join', '--', 'sh', '-c', 'id -u; ps -o pgid= -p $$; echo e >&2']);
    expect(st.exitCode, text(st.err)).to.equal(0);
    const out = await run('/bin/sh', ['-c', 'cat /run/copper/j3.stdout; cat /run/copper/j3.pgid; test ! -e /run/copper/j3.stderr']);
    const [uid, pgid, e, pgidFile] = text(out.out).trim().split('\n').map((l) => l.trim());
    expect(uid).to.equal('65534');
    expect(pgid).to.equal(pgidFile);
    expect(e).to.equal('e');
    expect(out.exitCode).to.equal(0);
  });

  it('run-job captures output to files, reports the status and falls back to $HOME', async () => {
    const st = await run(GUEST_RUN_JOB, ['--job', 'j1', '--cwd', '/no/such/dir', '--', 'sh', '-c', 'pwd; echo err >&2; exit 3']);
    expect(st.exitCode, text(st.err)).to.equal(3);
    const out = await run('/bin/sh', ['-c', 'cat /run/copper/j1.stdout; echo ---; cat /run/copper/j1.stderr; echo ---; cat /run/copper/j1.exit; test -s /run/copper/j1.pgid']);
    expect(out.exitCode).to.equal(0);
    expect(text(out.out)).to.match(/^\/root\n---\nrun-job: directory '\/no\/such\/dir' does not exist.*\nerr\n---\nexit 3\n$/);
  });

  it('run-job runs a script file with arguments', async () => {
    const put = await run('/bin/sh', ['-c', 'printf \'echo "args:$*"; echo "shell:$0"\\n\' > /tmp/job.sh']);
    expect(put.exitCode).to.equal(0);
    const st = await run(GUEST_RUN_JOB, ['--job', 'j4', '--script', '/tmp/job.sh', '--', 'a', 'b c']);
    expect(st.exitCode, text(st.err)).to.equal(0);
    const out = await run('/bin/cat', ['/run/copper/j4.stdout']);
    expect(text(out.out)).to.equal('args:a b c\nshell:/tmp/job.sh\n');
  });

  it('run-job runs a script through its #! interpreter and that line\'s one argument', async () => {
    // Written without the x bit, as the driver writes job scripts.
    const put = await run('/bin/sh', ['-c', 'printf \'#!/usr/bin/env  python3 \nimport sys; print(sys.argv[1:])\n\' > /tmp/job.py; chmod 644 /tmp/job.py']);
    expect(put.exitCode).to.equal(0);
    const st = await run(GUEST_RUN_JOB, ['--job', 'j5', '--user', 'nobody', '--script', '/tmp/job.py', '--', 'x', 'y z']);
    expect(st.exitCode, text(st.err)).to.equal(0);
    const out = await run('/bin/sh', ['-c', 'cat /run/copper/j5.stdout /run/copper/j5.stderr']);
    expect(text(out.out)).to.equal("['x', 'y z']\n");
  });

  it('run-job reports an unknown account in the job\'s stderr with status 2', async () => {
    const st = await run(GUEST_RUN_JOB, ['--job', 'j6', '--user', 'nosuchuser', '--', 'true']);
    expect(st.exitCode).to.equal(2);
    const out = await run('/bin/sh', ['-c', 'cat /run/copper/j6.stderr /run/copper/j6.exit']);
    expect(text(out.out)).to.equal("run-job: no such user 'nosuchuser' in the headnode\nexit 2\n");
  });

  it('run-job re-raises the signal that killed the command', async () => {
    const st = await run(GUEST_RUN_JOB, ['--job', 'j2', '--', 'sh', '-c', 'kill -TERM $$']);
    expect(st.signal).to.equal(15);
    const ex = await run('/bin/cat', ['/run/copper/j2.exit']);
    expect(text(ex.out)).to.equal('signal 15\n');
  });

  it('clone-init sets hostname, machine-id and clock', async () => {
    const now = (Date.now() / 1000).toFixed(3);
    const st = await run(GUEST_CLONE_INIT, ['boottest-j9', '0123456789abcdef0123456789abcdef', now], Buffer.from('seed\n'));
    expect(st.exitCode, text(st.err)).to.equal(0);
    const chk = await run('/bin/sh', ['-c', 'hostname; cat /etc/machine-id; date +%s; cat /etc/hostname; grep -c "^127.0.1.1[[:space:]]boottest-j9$" /etc/hosts; grep -c "^127.0.0.1" /etc/hosts']);
    const [host, mid, t, etcHostname, named, localhost] = text(chk.out).trim().split('\n');
    expect(host).to.equal('boottest-j9');
    expect(mid).to.equal('0123456789abcdef0123456789abcdef');
    expect(Math.abs(Number(t) - Date.now() / 1000)).to.be.lessThan(30);
    expect(etcHostname).to.equal('boottest-j9');
    expect(named, '/etc/hosts names the clone once').to.equal('1');
    expect(localhost, 'the rest of /etc/hosts is kept').to.equal('1');
    // Run again with another name: the line is replaced, not added.
    const again = await run(GUEST_CLONE_INIT, ['boottest-j10', '0123456789abcdef0123456789abcdef', now]);
    expect(again.exitCode, text(again.err)).to.equal(0);
    const hosts = await run('/bin/sh', ['-c', 'grep -c "^127.0.1.1" /etc/hosts; grep -c boottest-j9 /etc/hosts']);
    expect(text(hosts.out)).to.equal('1\n0\n');
  });

  it('run-job --init gives the clone its identity in the same exec, before the command', async () => {
    const now = (Date.now() / 1000).toFixed(3);
    const st = await run(GUEST_RUN_JOB, ['--init', 'boottest-j11', 'fedcba9876543210fedcba9876543210', now, '--job', 'j7', '--', 'sh', '-c', 'hostname; cat /etc/machine-id'], Buffer.from('seed\n'));
    expect(st.exitCode, text(st.err)).to.equal(0);
    const out = await run('/bin/cat', ['/run/copper/j7.stdout']);
    expect(text(out.out)).to.equal('boottest-j11\nfedcba9876543210fedcba9876543210\n');
    // A clone-init that fails stops the command: status 125, the reason on run-job's own stderr.
    const bad = await run(GUEST_RUN_JOB, ['--init', 'bad name', 'fedcba9876543210fedcba9876543210', now, '--job', 'j8', '--', 'touch', '/tmp/j8-ran']);
    expect(bad.exitCode).to.equal(125);
    expect(text(bad.err)).to.equal("run-job: clone-init failed: clone-init: bad hostname 'bad name'\n");
    expect((await run('/bin/sh', ['-c', 'test -e /tmp/j8-ran'])).exitCode, 'the command did not run').to.equal(1);
  });

  it('the guest CLI says so in one line when gcd is unreachable', async () => {
    await new Promise<void>((resolve) => api!.close(() => resolve()));
    api = undefined;
    const st = await run('/usr/local/bin/gcqstat', []);
    expect(st.exitCode).to.equal(3);
    expect(text(st.err), text(st.err)).to.match(/^gcqstat: cannot reach gcd at 10\.0\.2\.100:80: .+\n$/);
    expect(text(st.err), 'socat must not talk to the guest').not.to.contain('socat');
  });

  it('powers off when shutdown is run the way guest-shutdown runs it', async () => {
    const exited = new Promise<number | null>((resolve) => qemu!.once('exit', (code) => resolve(code)));
    await agent!.exec('/sbin/shutdown', ['-h', '-P', '+0', 'hypervisor initiated shutdown'], null, null, false);
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 30_000).unref());
    expect(await Promise.race([exited, timeout])).to.equal(0);
  });
});
