import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { BIN, GcdProcess } from '../helpers/gcd-process.js';

/**
 * The product's promise, end to end, with real VMs under TCG: a user works inside their
 * headnode and submits from there. gcd runs as a process with the QEMU backend (the default).
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

describe('working inside a headnode: gcqsub from the guest, identity by construction @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;

  const gc = (...args: string[]) => g.tool('gc', args);
  /** Run a shell command inside a headnode as root (the admin's `gc headnode exec`). */
  const inside = (hn: string, script: string, timeoutSec = 600) => {
    const r = g.inHeadnode(hn, script, timeoutSec);
    return r;
  };

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_SERVER_NAME: 'srv', GC_KILL_DELAY_MS: '2000' });
    await g.start();
    g.startHeadnodes(
      [
        ['alice-hn', 'alice'],
        ['bob-hn', 'bob'],
      ],
      384,
    );
  });

  after(async function () {
    if (!g) return;
    for (const name of ['alice-hn', 'bob-hn']) gc('headnode', 'destroy', name);
    await g.cleanup();
    const left = g.processesLeft();
    expect(left, 'no qemu or helper left running for this state folder').to.equal('');
  });

  it('apt-get install, write a program, `gcqsub python3 myprogram.py`: the output appears next to it', function () {
    // Only bookworm main: the package lists are what makes apt slow under TCG.
    const apt = inside(
      'alice-hn',
      'echo "deb http://deb.debian.org/debian bookworm main" > /etc/apt/sources.list && apt-get update -q >/dev/null && apt-get install -y -q python3-six >/dev/null && python3 -c "import six; print(six.__version__)"',
      900,
    );
    expect(apt.status, apt.stderr + apt.stdout).to.equal(0);
    const prog = 'import six, socket\nprint("six", six.__version__, "on", socket.gethostname())\n';
    const w = inside('alice-hn', `mkdir -p /root/work && cat > /root/work/myprogram.py <<'PY'\n${prog}PY\necho ok`);
    expect(w.stdout).to.equal('ok\n');
    const sub = inside('alice-hn', 'cd /root/work && gcqsub -W block=true python3 myprogram.py');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    expect(id).to.match(/^\d+\.srv$/);
    const seq = id.split('.')[0];
    const out = inside('alice-hn', `cat /root/work/python3.o${seq}; stat -c '%U %a' /root/work/python3.o${seq}`);
    expect(out.stdout).to.equal(`six ${apt.stdout.trim()} on alice-hn-${seq}\nroot 644\n`);
    // The clone wrote nothing back into the headnode but the output files.
    const st = g.tool('gcqstat', ['-x', '-f', '-F', 'json', id]);
    const job = (JSON.parse(st.stdout) as { Jobs: Record<string, { Job_Owner: string; Exit_status: number }> }).Jobs[id];
    expect(job.Job_Owner).to.match(/^alice@/);
    expect(job.Exit_status).to.equal(0);
  });

  it("gc console attaches to the headnode's root shell (scripted here through stdin)", function () {
    const r = spawnSync(process.execPath, [`${BIN}/gc.js`, 'console', 'alice-hn'], {
      env: g.env,
      input: 'echo CONSOLE-$((6*7)) $(id -un) $(hostname)\n',
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.contain('CONSOLE-42 root alice-hn');
    const none = g.tool('gc', ['console', 'nosuch']);
    expect(none.status).to.equal(1);
    expect(none.stderr.trim()).to.match(/^gc console: headnode nosuch is not running/);
  });

  it("another user's headnode cannot see, delete or alter the job; forged fields are ignored", function () {
    const sub = inside('alice-hn', 'cd /root && gcqsub -N longjob -- sleep 120');
    expect(sub.status, sub.stderr).to.equal(0);
    const id = sub.stdout.trim();
    const seen = inside('bob-hn', 'gcqstat -x; gcqstat ' + id + '; echo rc=$?');
    expect(seen.stdout).to.not.contain('longjob');
    expect(seen.stdout).to.contain('rc=153');
    const del = inside('bob-hn', `gcqdel ${id}; echo rc=$?`);
    expect(del.stdout).to.contain('rc=153');
    expect(del.stderr).to.contain(`Unknown Job Id ${id}`);
    // A hand-made request that claims to be alice on alice-hn, with --headnode: refused or ignored.
    const forged = inside(
      'bob-hn',
      `python3 - <<'PY'
import json, http.client
c = http.client.HTTPConnection("10.0.2.100", 80, timeout=120)
body = {"tool": "gcqsub", "argv": ["--headnode", "alice-hn", "--", "true"], "cwd": "/root", "env": {}, "user": "alice", "owner": "alice", "headnode": "alice-hn"}
c.request("POST", "/v1/cli", json.dumps(body), {"Content-Type": "application/json"})
r = json.loads(c.getresponse().read())
print(r.get("exitCode"), r.get("stderr", "").strip())
body["argv"] = ["-N", "forged", "--", "true"]
c.request("POST", "/v1/cli", json.dumps(body), {"Content-Type": "application/json"})
print(json.loads(c.getresponse().read()).get("stdout", "").strip())
PY`,
    );
    const [refusal, bobsJob] = forged.stdout.trim().split('\n');
    expect(refusal).to.match(/^2 gcqsub: --headnode/);
    const owner = g.tool('gcqstat', ['-x', '-f', '-F', 'json', bobsJob]);
    expect(owner.stdout).to.match(/"Job_Owner":"bob@/);
    // alice's job is still there, and alice can delete it.
    expect(inside('alice-hn', `gcqdel ${id} && echo deleted`).stdout).to.equal('deleted\n');
  });

  it('nothing inside a guest reaches Redis', function () {
    const r = inside(
      'bob-hn',
      `python3 - <<'PY'
import socket
for port in (6379, 6380, 16379):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect(("10.0.2.2", port)); print("open", port)
    except OSError as e:
        print("closed", port)
PY`,
    );
    expect(r.stdout).to.equal('closed 6379\nclosed 6380\nclosed 16379\n');
    // Redis has no TCP listener at all: only its Unix socket.
    const redisPid = spawnSync('cat', [`${g.stateDir}/redis/redis.pid`])
      .stdout.toString()
      .trim();
    const tcp = spawnSync('sh', [
      '-c',
      `ls -l /proc/${redisPid}/fd 2>/dev/null | grep -c socket; cat /proc/net/tcp /proc/net/tcp6 | awk '$4=="0A"' | wc -l`,
    ]).stdout.toString();
    expect(Number(tcp.split('\n')[0])).to.be.greaterThan(0);
    const listeners = spawnSync('sh', [
      '-c',
      `for f in /proc/${redisPid}/fd/*; do readlink $f; done | grep socket | sed 's/socket:\\[\\(.*\\)\\]/\\1/' | while read i; do grep -l " $i " /proc/net/tcp /proc/net/tcp6; done`,
    ])
      .stdout.toString()
      .trim();
    expect(listeners, 'redis-server holds no TCP socket').to.equal('');
  });

  it('garbage, huge bodies, unknown operations and floods on one channel: clear errors, others still served', function () {
    const r = inside(
      'bob-hn',
      `python3 - <<'PY'
import json, socket, http.client, threading
def raw(data):
    s = socket.create_connection(("10.0.2.100", 80), timeout=30)
    s.sendall(data)
    try:
        return s.recv(200).split(b"\\r\\n")[0].decode() or "closed"
    except OSError as e:
        return "closed"
    finally:
        s.close()
print("garbage:", raw(b"\\xff\\x00\\x13 not http at all\\r\\n\\r\\n"))
c = http.client.HTTPConnection("10.0.2.100", 80, timeout=60)
c.request("POST", "/v1/cli", b"x" * (2 * 1024 * 1024), {"Content-Type": "application/json"})
r = c.getresponse(); print("huge:", r.status, json.loads(r.read())["error"])
c = http.client.HTTPConnection("10.0.2.100", 80, timeout=60)
c.request("POST", "/v1/cli", json.dumps({"tool": "rm-rf", "argv": []}), {"Content-Type": "application/json"})
r = c.getresponse(); print("unknown:", r.status, json.loads(r.read())["error"])
c.request("POST", "/v1/cli", "{not json", {"Content-Type": "application/json"})
r = c.getresponse(); print("badjson:", r.status, json.loads(r.read())["error"])
ok = []
def one():
    try:
        raw(b"GET /v1/jobs HTTP/1.0\\r\\n\\r\\n"); ok.append(1)
    except OSError:
        pass
ts = [threading.Thread(target=one) for _ in range(40)]
[t.start() for t in ts]; [t.join() for t in ts]
print("flood done")
PY`,
      300,
    );
    expect(r.stdout).to.match(/^garbage: (HTTP\/1\.1 400|closed)/m);
    expect(r.stdout).to.contain('huge: 413 request body over 1048576 bytes');
    expect(r.stdout).to.contain("unknown: 400 unknown tool 'rm-rf'");
    expect(r.stdout).to.contain('badjson: 400 request body is not valid JSON');
    expect(r.stdout).to.contain('flood done');
    const other = inside('alice-hn', 'gcqstat -x >/dev/null && echo served');
    expect(other.stdout).to.equal('served\n');
    expect(g.proc!.exitCode).to.equal(null, 'gcd is still running');
  });
});
