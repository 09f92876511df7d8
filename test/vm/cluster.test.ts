import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GcdProcess, ROOT, until } from '../helpers/gcd-process.js';
import type { CloneInfo } from '../../src/clusters/types.js';
import { CopperClient } from '../../src/index.js';

/**
 * Virtual clusters end to end, with real VMs under TCG and gcd as a process: `gc clone`
 * typed inside a headnode (and inside a clone), the cluster network, generations, quotas,
 * TTL, and a gcd killed -9 while clones run.
 *
 * The headnode runs a small HTTP server (port 8000) started before the first `gc clone`: it
 * is forked into every clone with the rest of the memory, so the test reaches each clone over
 * the cluster network only, and can ask a clone to fetch from another one or to run a
 * command (e.g. `gc clone` in a clone: generation 2).
 */
const IMAGE_DIR = process.env.GC_IMAGE_DIR ?? '/var/tmp/copper-test/images';

const PROBE = String.raw`
import http.server, json, os, subprocess, urllib.parse, urllib.request, itertools
runs = itertools.count(1)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        try:
            if u.path == '/env':
                body = open('/etc/copper/clone.env').read() if os.path.exists('/etc/copper/clone.env') else 'none\n'
            elif u.path == '/fetch':
                body = urllib.request.urlopen(q['url'][0], timeout=30).read().decode()
            elif u.path == '/run':
                n = q.get('id', [str(next(runs))])[0]
                r = subprocess.run(['sh', '-c', q['c'][0]], capture_output=True, text=True, timeout=900)
                body = json.dumps({'rc': r.returncode, 'out': r.stdout, 'err': r.stderr})
                with open('/tmp/run-%s.json' % n, 'w') as f:
                    f.write(body)
            elif u.path == '/file':
                body = open(q['p'][0]).read()
            else:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
        except Exception as e:
            data = ('ERROR %s' % e).encode()
            self.send_response(500)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(('', 8000), H).serve_forever()
`;

describe('virtual clusters: gc clone inside a headnode, the cluster network, generations, quotas, gcd -9 @vm', function () {
  this.timeout(900_000);
  let g: GcdProcess;
  const HN = 'alice-hn';

  const gc = (...args: string[]) => g.tool('gc', args);
  /** A shell command inside a headnode, as root (the admin's `gc headnode exec`). */
  const inside = (hn: string, script: string, timeoutSec = 600) => g.inHeadnode(hn, script, timeoutSec);
  /** GET a URL from inside the headnode (over its cluster network). */
  const fetchIn = (hn: string, url: string) =>
    inside(hn, `python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=120).read().decode())' '${url}'`);
  /** Run a shell command inside a clone, through its copy of the probe server. */
  const inClone = (name: string, cmd: string, id?: string): { rc: number; out: string; err: string } => {
    // encodeURIComponent leaves ' alone, which would end fetchIn's shell quoting.
    const r = fetchIn(HN, `http://${name}:8000/run?c=${encodeURIComponent(cmd).replace(/'/g, '%27')}${id ? `&id=${id}` : ''}`);
    expect(r.status, `${name}: ${r.stderr}`).to.equal(0);
    return JSON.parse(r.stdout) as { rc: number; out: string; err: string };
  };
  const clones = (): CloneInfo[] => {
    const r = gc('clones', '--headnode', HN, '--json');
    expect(r.status, r.stderr).to.equal(0);
    return JSON.parse(r.stdout) as CloneInfo[];
  };
  const envOf = (text: string): Record<string, string> => Object.fromEntries(text.trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
  const qemuPids = (): string => spawnSync('pgrep', ['-f', `qemu-system.*${g.stateDir}`]).stdout.toString().trim();

  before(async function () {
    g = new GcdProcess({ GC_IMAGE_DIR: IMAGE_DIR, GC_MAX_CLONES: '3' });
    await g.start();
    g.startHeadnodes([[HN, 'alice'], ['bob-hn', 'bob']], 256);
    // copper-init mounts the owner's shared volume after the network, maybe after the agent answers.
    await until('/shared in the headnode', () => inside(HN, 'grep -q " /shared fuse.sshfs " /proc/mounts').status === 0, 60_000);
    const w = inside(HN, `echo from-the-headnode > /shared/hello; cat > /root/probe.py <<'PY'\n${PROBE}\nPY\nsetsid python3 /root/probe.py </dev/null >/dev/null 2>&1 &\nfor i in $(seq 150); do python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8000))' 2>/dev/null && echo up && exit 0; sleep 0.2; done; exit 1`);
    expect(w.stdout, w.stderr).to.equal('up\n');
  });

  after(async function () {
    if (!g) return;
    if (g.proc?.exitCode === null) {
      gc('kill', '--all', '--headnode', HN);
      for (const name of [HN, 'bob-hn']) gc('headnode', 'destroy', name);
    }
    await g.stop();
    const left = qemuPids();
    await g.cleanup();
    expect(left, 'no qemu left running for this state folder').to.equal('');
  });

  it('gc clone 2 in the headnode: a server started before it listens in every clone; names resolve; clones reach each other', async function () {
    const t0 = Date.now();
    const r = inside(HN, 'gc clone 2');
    expect(r.status, r.stderr).to.equal(0);
    process.stderr.write(`      gc clone 2 in the headnode (through gc headnode exec): ${Date.now() - t0} ms\n`);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).to.match(/^ID\s+NAME\s+GEN\s+ADDRESS\s+TTL$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 4))).to.deep.equal([
      ['1', `${HN}-c1`, '1', '10.100.0.2'],
      ['2', `${HN}-c2`, '1', '10.100.0.3'],
    ]);
    // The headnode reaches each clone by name over the cluster network; each knows what it is.
    for (const id of [1, 2]) {
      const f = fetchIn(HN, `http://${HN}-c${id}:8000/env`);
      expect(f.status, f.stderr).to.equal(0);
      expect(envOf(f.stdout)).to.deep.include({
        COPPER_CLONE: '1', COPPER_CLONE_ID: String(id), COPPER_GENERATION: '1', COPPER_PARENT: HN, COPPER_HEADNODE: HN,
        COPPER_CLUSTER_IP: `10.100.0.${id + 1}`, COPPER_CLUSTER_NAME: `${HN}-c${id}`,
      });
    }
    // The headnode's own file says it is not a clone.
    expect(envOf(inside(HN, 'cat /etc/copper/clone.env').stdout)).to.deep.include({ COPPER_CLONE: '0', COPPER_CLUSTER_IP: '10.100.0.1' });
    // Clones reach each other (and the headnode) by name.
    const c1to2 = fetchIn(HN, `http://${HN}-c1:8000/fetch?url=${encodeURIComponent(`http://${HN}-c2:8000/env`)}`);
    expect(envOf(c1to2.stdout).COPPER_CLONE_ID, c1to2.stderr).to.equal('2');
    const c2to1 = fetchIn(HN, `http://${HN}-c2:8000/fetch?url=${encodeURIComponent(`http://${HN}-c1:8000/env`)}`);
    expect(envOf(c2to1.stdout).COPPER_CLONE_ID, c2to1.stderr).to.equal('1');
    const c2toHn = fetchIn(HN, `http://${HN}-c2:8000/fetch?url=${encodeURIComponent(`http://${HN}:8000/env`)}`);
    expect(envOf(c2toHn.stdout).COPPER_CLONE).to.equal('0');
    // gc whoami inside a clone: gcd knows it from its channel.
    const who = inClone(`${HN}-c2`, 'gc whoami; hostname; ip -br addr show cl0');
    expect(who.rc, who.err).to.equal(0);
    expect(who.out).to.contain('COPPER_CLONE=1\nCOPPER_CLONE_ID=2\nCOPPER_GENERATION=1\n');
    expect(who.out).to.contain(`\n${HN}-c2\n`);
    expect(who.out).to.match(/cl0\s+UP\s+10\.100\.0\.3\/24/);
    // The owner's shared volume is there in the clones too, both ways.
    const shared = inClone(`${HN}-c1`, 'cat /shared/hello && echo from-c1 > /shared/from-c1');
    expect(shared.out, shared.err).to.equal('from-the-headnode\n');
    expect(inside(HN, 'cat /shared/from-c1').stdout).to.equal('from-c1\n');
    const list = clones();
    expect(list.map((c) => [c.id, c.generation, c.state, c.address])).to.deep.equal([[1, 1, 'running', '10.100.0.2'], [2, 1, 'running', '10.100.0.3']]);
    expect(list.every((c) => (c.pssMiB ?? 0) > 0 && c.uptimeSec >= 0)).to.equal(true);
    // The TypeScript client (host admin socket) sees the same through the same call.
    const viaClient = await new CopperClient({ socketPath: join(g.stateDir, 'gcd.sock') }, { headnode: HN }).clones();
    expect(viaClient.map((c) => [c.id, c.name, c.state])).to.deep.equal(list.map((c) => [c.id, c.name, c.state]));
  });

  it('a job submitted from a headnode that has a cluster runs in a clone that is not on the cluster network', function () {
    const sub = inside(HN, `cd /root && gcqsub -W block=true -N net -- sh -c 'ip -br addr show cl0; python3 -c "import socket; socket.create_connection((\\"${HN}-c1\\", 8000), timeout=3)" 2>&1 | tail -1'`);
    expect(sub.status, sub.stderr).to.equal(0);
    const seq = sub.stdout.trim().split('.')[0];
    const out = inside(HN, `cat /root/net.o${seq}`).stdout;
    expect(out).to.match(/^cl0\s+\S+\s+10\.100\.0\.1\/24/); // the headnode's copy, isolated
    expect(out).to.match(/timed out|No route|unreachable/i);
  });

  it('another user\'s cluster is another L2: bob\'s headnode cannot reach alice\'s clones even with an address in her subnet', function () {
    const r = inside('bob-hn', 'gc clone 1 --ttl 600 >/dev/null && ip addr add 10.100.0.200/24 dev cl0 && python3 -c \'import socket; socket.create_connection(("10.100.0.2", 8000), timeout=5)\' 2>&1 | tail -1; ip addr del 10.100.0.200/24 dev cl0');
    expect(r.stdout).to.match(/timed out|No route|unreachable/i);
    const bob = JSON.parse(gc('clones', '--headnode', 'bob-hn', '--json').stdout) as CloneInfo[];
    expect(bob.map((c) => c.address)).to.deep.equal(['10.100.1.2']);
    // Distinct multicast groups on the host's loopback.
    const cmdlines = spawnSync('sh', ['-c', `pgrep -af 'qemu-system.*${g.stateDir}'`]).stdout.toString();
    expect(cmdlines).to.match(/-name alice-hn\.c1,.*mcast=239\.193\.0\.0:20000,localaddr=127\.0\.0\.1/);
    expect(cmdlines).to.match(/-name bob-hn\.c1,.*mcast=239\.193\.0\.1:20001,localaddr=127\.0\.0\.1/);
    expect(gc('kill', '--all', '--headnode', 'bob-hn').status).to.equal(0);
  });

  it('a clone clones itself (generation 2) from Python: the call returns the new clone in the caller and [] in the child', function () {
    const r = inClone(`${HN}-c1`, 'python3 -c "import copper, json; print(json.dumps(copper.clone(1)))"', 'fork');
    expect(r.rc, r.err).to.equal(0);
    const made = JSON.parse(r.out) as CloneInfo[];
    expect(made.map((c) => [c.id, c.generation, c.parent, c.address])).to.deep.equal([[3, 2, `${HN}-c1`, '10.100.0.4']]);
    // The child's copy of the same call returned [] (fork semantics), written by its copy of the probe.
    const child = JSON.parse(fetchIn(HN, `http://${HN}-c3:8000/file?p=/tmp/run-fork.json`).stdout) as { rc: number; out: string; err: string };
    expect(child).to.deep.include({ rc: 0, out: '[]\n' });
    expect(envOf(fetchIn(HN, `http://${HN}-c3:8000/env`).stdout)).to.deep.include({
      COPPER_CLONE_ID: '3', COPPER_GENERATION: '2', COPPER_PARENT: `${HN}-c1`, COPPER_BATCH_RANK: '0', COPPER_BATCH_SIZE: '1',
    });
    // The server started in the headnode before anything was cloned answers in generation 2 too.
    const three = inClone(`${HN}-c3`, `python3 -c 'import copper; print(copper.whoami()["COPPER_CLONE_ID"], len(copper.clones()))'`);
    expect(three.out, three.err).to.equal('3 3\n');
  });

  it('the quota refuses a batch over the limit whole (all or nothing) and says which limit', function () {
    const over = inside(HN, 'gc clone 1');
    expect(over.status).to.equal(38);
    expect(over.stderr).to.equal('gc: gc clone 1: refused, none created: max_clones=3 for user alice (gcd setting GC_MAX_CLONES) (3 live clones, 1 more asked)\n');
    expect(inside(HN, 'gc kill 2').stdout).to.equal(`killed 2 ${HN}-c2\n`);
    const two = inside(HN, 'gc clone 2');
    expect(two.status).to.equal(38);
    expect(two.stderr).to.contain('(2 live clones, 2 more asked)');
    expect(clones().map((c) => c.id)).to.deep.equal([1, 3]);
    // Bad input: one clear line each, nothing done.
    expect(inside(HN, 'gc clone 0').stderr).to.equal('gc: gc clone N: N must be a whole number from 1 to 64, not 0\n');
    expect(inside(HN, 'gc clone two').stderr).to.equal("gc: gc clone N: 'two' is not a whole number\n");
    expect(inside(HN, 'gc kill 9').stderr).to.equal(`gc: gc kill: no clone 9 in the cluster of ${HN} (its clones: 1, 3); nothing killed\n`);
    expect(inside(HN, 'gc clones --headnode bob-hn').stderr).to.contain('--headnode is for the administrator on the host');
    expect(gc('clone', '2').stderr).to.equal('gc: gc clone: on the host, name the headnode: gc clone --headnode NAME ...\n');
    // The typed routes from inside the headnode: same identity rules, refusals with fields.
    const typed = (method: string, path: string, body?: unknown): { status: number; body: Record<string, unknown> } => {
      const py = `import json, sys, urllib.request, urllib.error
req = urllib.request.Request('http://10.0.2.100' + sys.argv[2], method=sys.argv[1], data=sys.argv[3].encode() if sys.argv[3] else None, headers={'Content-Type': 'application/json'})
try:
    r = urllib.request.urlopen(req, timeout=120); print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())`;
      const r = inside(HN, `python3 -c "$(cat <<'PY'\n${py}\nPY\n)" ${method} '${path}' '${body === undefined ? '' : JSON.stringify(body)}'`);
      const [status, text] = r.stdout.trim().split('\n');
      return { status: Number(status), body: JSON.parse(text ?? '{}') as Record<string, unknown> };
    };
    expect((typed('GET', '/v1/clusters').body.clones as CloneInfo[]).map((c) => c.id)).to.deep.equal([1, 3]);
    const notMine = typed('POST', '/v1/clusters/kill', { all: true, headnode: 'bob-hn' });
    expect([notMine.status, notMine.body.code]).to.deep.equal([400, 'EUSAGE']);
    const overQuota = typed('POST', '/v1/clusters/clone', { n: 2 });
    expect(overQuota.status).to.equal(409);
    expect(overQuota.body.fields).to.deep.equal({ limit: 'max_clones', max: 3, entity: 'user alice', amount: 2, used: 2, source: 'gcd setting GC_MAX_CLONES' });
    expect(clones().map((c) => c.id)).to.deep.equal([1, 3]);
  });

  it('gc kill --generation 2 leaves generation 1 running', function () {
    const k = inside(HN, 'gc kill --generation 2');
    expect(k.stdout, k.stderr).to.equal(`killed 3 ${HN}-c3\n`);
    expect(clones().map((c) => [c.id, c.generation, c.state])).to.deep.equal([[1, 1, 'running']]);
    expect(envOf(fetchIn(HN, `http://${HN}-c1:8000/env`).stdout).COPPER_CLONE_ID).to.equal('1');
    expect(qemuPids().split('\n').length, 'alice-hn, bob-hn and one clone').to.equal(3);
  });

  it('a TTL destroys the clone when it runs out; the shell tool returns in the child too (fork)', async function () {
    const r = inside(HN, 'gc clone 1 --ttl 15 >/tmp/ttl.out 2>/tmp/ttl.err; echo "rc=$?" >>/tmp/ttl.out; cat /tmp/ttl.out');
    expect(r.stdout).to.match(/^ID .*\n2 +alice-hn-c2 +1 +10\.100\.0\.3 +1\ds\nrc=0\n$/);
    expect(clones().find((c) => c.id === 2)?.expiresAt).to.be.a('number');
    // The copy of that shell line in the clone went on after `gc clone` returned there.
    await until('the child to write its files', () => fetchIn(HN, `http://${HN}-c2:8000/file?p=/tmp/ttl.out`).stdout === 'rc=0\n', 10_000);
    expect(fetchIn(HN, `http://${HN}-c2:8000/file?p=/tmp/ttl.err`).stdout).to.equal(`gc clone: continuing in clone ${HN}-c2 (id 2, generation 1) of ${HN}\n`);
    await until('the TTL to destroy clone 2', () => !clones().some((c) => c.id === 2), 60_000);
    expect(existsSync(join(g.stateDir, 'clusters', 'vm', 'clones', `${HN}.c2`))).to.equal(false);
  });

  it('gcd killed -9: a live clone is re-attached, a clone that died meanwhile is cleaned up, gc clones tells the truth', async function () {
    expect(inside(HN, 'gc clone 1').status).to.equal(0); // clone 2 again
    const before = clones();
    expect(before.map((c) => c.id)).to.deep.equal([1, 2]);
    const pid2 = Number(readFileSync(join(g.stateDir, 'clusters', 'vm', 'clones', `${HN}.c2`, 'qemu.pid'), 'utf8'));
    await g.kill9();
    process.kill(pid2, 'SIGKILL'); // dies while gcd is down
    await g.start();
    const after = clones();
    expect(after.map((c) => [c.id, c.state])).to.deep.equal([[1, 'running']]);
    expect(existsSync(join(g.stateDir, 'clusters', 'vm', 'clones', `${HN}.c2`))).to.equal(false);
    // Clone 1 still serves, still knows its channel to gcd, and can still be cloned.
    expect(inClone(`${HN}-c1`, 'gc whoami').out).to.contain('COPPER_CLONE_ID=1\n');
    const again = inside(HN, 'gc clone 1');
    expect(again.status, again.stderr).to.equal(0);
    expect(envOf(fetchIn(HN, `http://${HN}-c2:8000/env`).stdout).COPPER_CLONE_ID).to.equal('2');
  });

  it('gc kill --all', function () {
    const k = inside(HN, 'gc kill --all');
    expect(k.stdout.trim().split('\n')).to.deep.equal([`killed 1 ${HN}-c1`, `killed 2 ${HN}-c2`]);
    expect(clones()).to.deep.equal([]);
  });

  it('the example appliance: a parallel map over 2 clones writes its result to the shared volume (docs/examples/pmap.py)', function () {
    const items = Array.from({ length: 8 }, (_, i) => `item-${i}`);
    const prog = readFileSync(join(ROOT, 'docs', 'examples', 'pmap.py'), 'utf8');
    const w = inside(HN, `cat > /root/pmap.py <<'PY'\n${prog}PY\nprintf '%s\\n' ${items.join(' ')} > /root/in.txt`);
    expect(w.status, w.stderr).to.equal(0);
    const t0 = Date.now();
    const r = inside(HN, 'python3 /root/pmap.py 2 /root/in.txt /shared/out.txt sha256sum');
    expect(r.status, r.stderr).to.equal(0);
    process.stderr.write(`      pmap over 2 clones, 8 items: ${Date.now() - t0} ms\n`);
    const want = items.map((x) => `${createHash('sha256').update(`${x}\n`).digest('hex')}  -`).join('\n') + '\n';
    expect(readFileSync(join(g.stateDir, 'shared', 'alice', 'out.txt'), 'utf8')).to.equal(want);
    expect(clones(), 'the appliance killed its clones').to.deep.equal([]);
  });

  it('headnode destroy leaves no QEMU and no files behind', function () {
    expect(gc('headnode', 'destroy', HN).status).to.equal(0);
    expect(gc('headnode', 'destroy', 'bob-hn').status).to.equal(0);
    expect(qemuPids()).to.equal('');
    const vm = join(g.stateDir, 'clusters', 'vm');
    expect(readdirSync(join(vm, 'clones'))).to.deep.equal([]);
    expect(readdirSync(join(vm, 'snapshots'))).to.deep.equal([]);
    const reg = JSON.parse(readFileSync(join(g.stateDir, 'clusters', 'registry.json'), 'utf8')) as { clusters: unknown[]; snapshots: unknown[] };
    expect(reg).to.deep.include({ clusters: [], snapshots: [] });
  });
});
