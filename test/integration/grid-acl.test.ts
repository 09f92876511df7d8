import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { nodeRedisPassword, nodeRedisUser } from '../../src/grid/node-redis-users.js';
import { GcdProcess, until } from '../helpers/gcd-process.js';
import { freePort } from '../helpers/grid-transfer.js';
import { NetnsGrid, type GridNode, fakeGridServerEnv } from '../helpers/netns-grid.js';

interface QstatJob {
  job_state: string;
  exec_host?: string;
  Exit_status?: number;
  comment?: string;
}

/**
 * Issue 14, security: each compute node signs in to the server's Redis as its own ACL user
 * (node-<name>, its password from its token). Real redis-server, a real server gcd and real
 * `gcd --node` processes in network namespaces (test-double driver). With a node's credentials
 * no admin command runs, the server's own keys and other nodes' records cannot be written, one
 * node cannot sign in as another, a revoked node is cut off; users outlive Redis and gcd
 * restarts. And a node that dies between writing a job's F and settling it: the server settles
 * it, so an afterok dependent runs.
 */
describe('grid: a Redis ACL user per node (real redis-server, gcd and gcd --node processes)', function () {
  this.timeout(180_000);
  const grid = new NetnsGrid();
  let g: GcdProcess;
  const nodes: Record<string, GridNode> = {};
  const tokens: Record<string, string> = {};
  // Made in before(): made at load time it would leak whenever mocha filters this suite out.
  let marks = '';
  const open: Redis[] = [];

  const jobs = (...ids: string[]): Record<string, QstatJob> => {
    const r = g.tool('gcqstat', ['-x', '-t', '-f', '-F', 'json', ...ids]);
    if (r.status !== 0) throw new Error(`gcqstat: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { Jobs: Record<string, QstatJob> }).Jobs;
  };
  const stateOf = (name: string): string | undefined =>
    (JSON.parse(g.tool('gc', ['nodes', '--json']).stdout) as Array<{ name: string; state: string }>).find((n) => n.name === name)?.state;
  const sub = (...args: string[]): string => {
    const r = g.tool('gcqsub', ['--headnode', 'hn1', ...args]);
    expect(r.status, r.stderr).to.equal(0);
    return r.stdout.trim();
  };
  /** A connection to the server's Redis as `user`, from outside the namespaces (the bridge). */
  const connect = async (user: string, password: string): Promise<Redis> => {
    const c = new Redis({
      host: grid.serverAddress,
      port: grid.redisPort,
      username: user,
      password,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    let why = '';
    c.on('error', (e: Error) => (why = e.message));
    open.push(c);
    try {
      await c.connect();
      await c.ping(); // ioredis signs in on connect; a refusal is told through 'error'
    } catch (e) {
      throw new Error(why || (e as Error).message, { cause: e });
    }
    return c;
  };
  let adminConn: Redis | undefined;
  /** The server's own (default) user, for looking. */
  const admin = (): Redis => {
    if (!adminConn) {
      adminConn = new Redis({ host: grid.serverAddress, port: grid.redisPort, password: readFileSync(join(g.stateDir, 'redis', 'password'), 'utf8').trim() });
      adminConn.on('error', () => undefined); // while the server restarts
    }
    return adminConn;
  };
  const asNode = (name: string): Promise<Redis> => connect(nodeRedisUser(name), nodeRedisPassword(tokens[name]));
  const refusal = async (p: Promise<unknown>): Promise<string> => {
    try {
      await p;
    } catch (e) {
      return (e as Error).message;
    }
    return 'ran';
  };

  before(async function () {
    marks = mkdtempSync(join(tmpdir(), 'copper-acl-marks-'));
    if (process.getuid?.() !== 0) throw new Error('the grid harness makes network namespaces: run as root');
    grid.up();
    g = await grid.startServer(fakeGridServerEnv(3000));
    for (const n of ['n1', 'n2', 'n3']) tokens[n] = grid.mintToken(n);
    nodes.n1 = await grid.addNode('n1', { ncpus: 2, memMiB: 2048, env: { GC_NODE_TOKEN: tokens.n1 } });
    nodes.n2 = await grid.addNode('n2', { ncpus: 2, memMiB: 2048, env: { GC_NODE_TOKEN: tokens.n2 } });
    // n3 kills itself (SIGKILL) right after writing a job's F, before settling it (src/crash-point.ts).
    nodes.n3 = await grid.addNode('n3', { ncpus: 2, memMiB: 2048, env: { GC_NODE_TOKEN: tokens.n3, GC_TEST_CRASH_AT: 'finish:after-F' } });
  });
  afterEach(function () {
    if (this.currentTest?.state !== 'failed') return;
    for (const n of grid.nodes) process.stdout.write(`--- ${n.name} log (tail)\n${n.log.slice(-3000)}\n`);
    process.stdout.write(`--- server log (tail)\n${g.log.slice(-3000)}\n`);
  });
  after(async function () {
    for (const c of open) c.disconnect();
    adminConn?.disconnect();
    await grid.teardown();
    rmSync(marks, { recursive: true, force: true });
  });

  it("with a node's credentials, no admin or dangerous command runs, directly or in a script", async function () {
    const c = await asNode('n1');
    expect(await c.ping()).to.equal('PONG');
    const refused: Array<[string, ...string[]]> = [
      ['CONFIG', 'GET', 'requirepass'],
      ['CONFIG', 'SET', 'appendonly', 'no'],
      ['ACL', 'LIST'],
      ['ACL', 'GETUSER', 'default'],
      ['ACL', 'SETUSER', 'node-n1', '+@all', '~*'],
      ['FLUSHALL'],
      ['FLUSHDB'],
      ['KEYS', '*'],
      ['SHUTDOWN', 'NOSAVE'],
      ['DEBUG', 'SLEEP', '0'],
      ['MODULE', 'LIST'],
      ['SCRIPT', 'KILL'],
      ['SCRIPT', 'FLUSH'],
      ['FUNCTION', 'FLUSH'],
      ['CLIENT', 'LIST'],
      ['CLIENT', 'KILL', 'USER', 'node-n2'],
      ['MONITOR'],
      ['SAVE'],
      ['BGREWRITEAOF'],
      ['REPLICAOF', '127.0.0.1', '1'],
      ['MIGRATE', '127.0.0.1', '1', 'copper:jobs', '0', '100'],
    ];
    for (const [cmd, ...args] of refused) {
      // DEBUG and MODULE are off for everyone by default (enable-debug-command); the ACL refuses them too.
      expect(await refusal(c.call(cmd, ...args)), `${cmd} ${args.join(' ')}`).to.match(/NOPERM|command not allowed/);
      expect(await admin().call('ACL', 'DRYRUN', 'node-n1', cmd, ...args), `ACL DRYRUN ${cmd}`).to.match(/^This user has no permissions/);
    }
    // A script runs with the caller's rights.
    expect(await refusal(c.eval("return redis.call('RANDOMKEY')", 0))).to.match(/NOPERM|can't run this command|can't access/);
    expect(await refusal(c.eval("return redis.call('KEYS', '*')", 0))).to.match(/NOPERM|can't run this command|can't access/);
    // It still runs what a node runs: the server, looking, sees the grid intact.
    expect(stateOf('n1')).to.equal('up');
  });

  it("a node cannot touch the server's own keys nor write another node's record", async function () {
    const c = await asNode('n1');
    const p = 'copper';
    const refused: Array<[string, ...string[]]> = [
      ['GET', `${p}:seq`],
      ['INCR', `${p}:seq`],
      ['GET', `${p}:events:cursor`],
      ['LRANGE', `${p}:web:samples`, '0', '-1'],
      ['HSET', `${p}:node:n2`, 'state', 'offline'],
      ['DEL', `${p}:node:n2:alive`],
      ['SET', `${p}:node:n2:alive`, '1'],
      ['SREM', `${p}:nodes`, 'n2'],
      ['DEL', `${p}:nodes`],
      ['HSET', `${p}:snapexport:any`, 'info', '{}'],
      ['SET', 'elsewhere', 'x'],
    ];
    for (const [cmd, ...args] of refused) expect(await refusal(c.call(cmd, ...args)), `${cmd} ${args.join(' ')}`).to.match(/NOPERM/);
    expect(await refusal(c.eval("return redis.call('HSET', KEYS[1], 'state', 'down')", 1, `${p}:node:n2`))).to.match(
      /NOPERM|can't run this command|can't access/,
    );
    expect(await refusal(c.eval("return redis.call('SREM', KEYS[1], 'n2')", 1, `${p}:nodes`))).to.match(/NOPERM|can't run this command|can't access/);
    // What a node needs: other hosts' records read (placement), its own written, jobs and the queue.
    expect((await c.hgetall(`${p}:node:n2`)).name).to.equal('n2');
    expect(await c.smembers(`${p}:nodes`)).to.include.members(['n1', 'n2', 'n3']);
    expect(await c.hset(`${p}:node:n1`, 'aclProbe', '1')).to.equal(1);
    expect(await c.hdel(`${p}:node:n1`, 'aclProbe')).to.equal(1);
    expect(await refusal(c.zrange(`${p}:jobs`, 0, 0))).to.equal('ran');
  });

  it("one node's password does not open another node's user, nor the server's", async function () {
    const n1pw = nodeRedisPassword(tokens.n1);
    expect(await refusal(connect(nodeRedisUser('n2'), n1pw))).to.match(/WRONGPASS/);
    expect(await refusal(connect('default', n1pw))).to.match(/WRONGPASS/);
    // A token is not a password either.
    expect(await refusal(connect(nodeRedisUser('n1'), tokens.n1))).to.match(/WRONGPASS/);
  });

  it('a node that dies after writing F, before settling: the server settles it once, its afterok dependent runs', async function () {
    g.tool('gc', ['node', 'offline', 'n1']);
    g.tool('gc', ['node', 'offline', 'n2']);
    const parent = sub('-N', 'parent', '--', 'sh', '-c', `echo "$PBS_JOBID" >> ${marks}/parent`);
    const child = sub('-N', 'child', '-W', `depend=afterok:${parent}`, '--', 'sh', '-c', `echo "$PBS_JOBID" >> ${marks}/child`);
    const n3 = nodes.n3.proc!;
    await until('n3 killed itself after F', () => n3.exitCode !== null || n3.signalCode !== null, 30_000);
    expect(n3.signalCode).to.equal('SIGKILL');
    expect(jobs(parent)[parent]).to.include({ job_state: 'F', Exit_status: 0 });
    expect(jobs(child)[child].job_state).to.equal('H');
    g.tool('gc', ['node', 'online', 'n1']);
    await until('n3 down', () => stateOf('n3') === 'down', 20_000);
    await until('child done', () => jobs(child)[child]?.job_state === 'F', 30_000);
    const c = jobs(child)[child];
    expect(c.Exit_status, JSON.stringify(c)).to.equal(0);
    expect(c.exec_host?.split('/')[0]).to.equal('n1');
    expect(readFileSync(join(marks, 'parent'), 'utf8').split('\n').filter(Boolean)).to.deep.equal([parent]);
    expect(readFileSync(join(marks, 'child'), 'utf8').split('\n').filter(Boolean)).to.deep.equal([child]);
    expect(await admin().hget(`copper:job:${parent}`, 'settling')).to.not.equal('1');
    expect(g.log.split('job ended on a dead node settled by the server').length - 1, 'settled once').to.equal(1);
    g.tool('gc', ['node', 'online', 'n2']);
  });

  it('a revoked node cannot sign in, its open connections are cut, and it goes down', async function () {
    const mine = await asNode('n2');
    expect(await mine.ping()).to.equal('PONG');
    const usersConnected = async (): Promise<string[]> =>
      ((await admin().call('CLIENT', 'LIST')) as string).split('\n').map((l) => /\buser=(\S+)/.exec(l)?.[1] ?? '');
    expect(await usersConnected()).to.include('node-n2');
    const r = g.tool('gc', ['node', 'token', '--revoke', 'n2']);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stderr).to.contain('Redis user node-n2 removed and its connections cut');
    expect(await refusal(mine.ping())).to.not.equal('ran');
    expect(await refusal(asNode('n2'))).to.match(/WRONGPASS/);
    // The n2 process tries again and again, in vain: no connection of node-n2 stays.
    await new Promise((res) => setTimeout(res, 1000));
    expect(await usersConnected()).to.not.include('node-n2');
    await until('n2 down', () => stateOf('n2') === 'down', 20_000);
  });

  it('the users outlive a kill -9 of the embedded Redis and a server restart; a revoked one stays gone', async function () {
    const pidFile = join(g.stateDir, 'redis', 'redis.pid');
    const before = Number(readFileSync(pidFile, 'utf8').trim());
    process.kill(before, 'SIGKILL');
    await until('redis-server started again', () => {
      const now = Number(readFileSync(pidFile, 'utf8').trim() || 0);
      return now > 0 && now !== before;
    });
    await until('n1 signs in again', async () => (await refusal(asNode('n1'))) === 'ran');
    expect(await refusal(asNode('n2'))).to.match(/WRONGPASS/);
    await g.stop();
    await g.start();
    expect(await refusal(asNode('n1'))).to.equal('ran');
    expect(await refusal(asNode('n2'))).to.match(/WRONGPASS/);
    await until('n1 up after the restart', () => stateOf('n1') === 'up', 20_000);
    const id = sub('-N', 'after', '--', 'sh', '-c', 'true');
    await until('job done on n1', () => jobs(id)[id]?.job_state === 'F', 30_000);
    expect(jobs(id)[id]).to.include({ Exit_status: 0 });
  });
});

/**
 * A site's own Redis (GC_REDIS_URL) where gcd's user may not manage users: gcd starts anyway,
 * and `gc node token` prints the ACL SETUSER the administrator runs (docs/scale.md); once run,
 * the node signs in with its token and has a node's rights only. Real redis-server and gcd.
 */
describe('grid: node users on an external Redis that gcd may not change (real redis-server, gcd)', function () {
  this.timeout(60_000);

  it('gc node token prints the ACL SETUSER to run; with it, the node signs in as a node', async function () {
    const port = await freePort();
    // The default user goes off last: the set-up itself runs as it.
    const users = ['user admin on >adminpw ~* &* +@all', 'user gcd on >gcdpw ~* &* +@all -acl', 'user default off'];
    const redis = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'],
      { stdio: 'ignore' },
    );
    const cli = (...args: string[]): string =>
      spawnSync('redis-cli', ['-p', String(port), '--user', 'admin', '--pass', 'adminpw', '--no-auth-warning', ...args], { encoding: 'utf8' }).stdout.trim();
    const ext = new GcdProcess({ GC_DRIVER: 'fake', GC_FAKE_HEADNODES: 'hn1:alice:physics', GC_REDIS_URL: `redis://gcd:gcdpw@127.0.0.1:${port}/0` });
    let node: Redis | undefined;
    try {
      await until('redis up', () => spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG');
      for (const u of users) spawnSync('redis-cli', ['-p', String(port), 'ACL', 'SETUSER', ...u.split(' ').slice(1)], { encoding: 'utf8' });
      await ext.start();
      const t = ext.tool('gc', ['node', 'token', 'n9']);
      expect(t.status, t.stderr).to.equal(0);
      const m = /Redis user node-n9 not made \(.*NOPERM.*\): run on the Redis: (ACL SETUSER .*)$/m.exec(t.stderr);
      expect(m, t.stderr).to.not.equal(null);
      const words = (m![1].match(/'[^']*'|\S+/g) ?? []).map((w) => w.replace(/^'(.*)'$/, '$1'));
      expect(cli(...words)).to.equal('OK');
      node = new Redis({
        host: '127.0.0.1',
        port,
        username: 'node-n9',
        password: nodeRedisPassword(t.stdout.trim()),
        lazyConnect: true,
        maxRetriesPerRequest: 0,
      });
      node.on('error', () => undefined);
      await node.connect();
      expect(await node.hset('copper:node:n9', 'probe', '1')).to.equal(1);
      const refused = await node.call('CONFIG', 'GET', '*').then(
        () => 'ran',
        (e: Error) => e.message,
      );
      expect(refused).to.match(/NOPERM/);
      expect(ext.log).to.contain('Redis users not managed by gcd');
    } finally {
      node?.disconnect();
      await ext.cleanup();
      redis.kill('SIGTERM');
    }
  });
});
