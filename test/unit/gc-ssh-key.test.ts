import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PermissionError, UsageError } from '../../src/errors.js';
import type { HeadnodeInfo, HeadnodeManager, HeadnodeSpec } from '../../src/headnodes/types.js';
import { SshKeyError } from '../../src/headnodes/ssh-keys.js';
import { gcTool } from '../../src/server/commands/gc.js';
import type { ToolRequest, ToolServices } from '../../src/server/commands/tool.js';

/**
 * `gc headnode create --ssh-key` and `gc headnode ssh-key ...` as gcd runs them: the files
 * come from the client one round at a time (needFile), bad ones are refused in one line, and
 * a guest changes only its own headnode's keys. The manager is an in-memory stand-in: what is
 * under test is the command, the manager's own part is in test/vm/ssh.test.ts.
 */
function keygen(dir: string, name: string): string {
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', join(dir, name)], { encoding: 'utf8' });
  expect(r.status, r.stderr).to.equal(0);
  return readFileSync(join(dir, `${name}.pub`), 'utf8');
}

class Headnodes implements Pick<HeadnodeManager, 'create' | 'get' | 'list' | 'setSshKeys'> {
  readonly specs = new Map<string, HeadnodeSpec>();
  async create(spec: HeadnodeSpec): Promise<HeadnodeInfo> {
    this.specs.set(spec.name, spec);
    return this.get(spec.name);
  }
  async get(name: string): Promise<HeadnodeInfo> {
    const spec = this.specs.get(name);
    if (!spec) throw new Error(`no ${name}`);
    return {
      ...spec,
      state: 'stopped',
      accel: 'tcg',
      createdAt: 0,
      ssh: { keys: (spec.sshKeys ?? []).map((l) => ({ fingerprint: l.slice(12, 24), comment: l.split(' ')[2] ?? '' })) },
    };
  }
  async list(): Promise<HeadnodeInfo[]> {
    return Promise.all([...this.specs.keys()].map((n) => this.get(n)));
  }
  async setSshKeys(name: string, update: (keys: readonly string[]) => string[]): Promise<HeadnodeInfo> {
    const spec = this.specs.get(name)!;
    spec.sshKeys = update(spec.sshKeys ?? []);
    return this.get(name);
  }
}

describe('gc headnode --ssh-key and gc headnode ssh-key', () => {
  let dir: string;
  let a: string;
  let b: string;
  let hn: Headnodes;
  const services = {} as ToolServices;
  const admin = (argv: string[], files: Record<string, string> = {}, missing: string[] = []): ToolRequest => ({
    actor: { kind: 'admin' },
    argv,
    cwd: '/home/admin',
    env: {},
    account: 'root',
    files,
    missing,
  });
  const run = (req: ToolRequest) => gcTool(req, services, hn as unknown as HeadnodeManager, () => Promise.reject(new Error('no exec')));

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ssh-lane-gc-'));
    a = keygen(dir, 'alice-laptop');
    b = keygen(dir, 'alice-desk');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(() => {
    hn = new Headnodes();
  });

  it('create asks the client for each key file in turn, then keeps both keys', async () => {
    const argv = ['headnode', 'create', 'hn1', '--owner', 'alice', '--ssh-key', 'a.pub', '--ssh-key', 'b.pub'];
    expect((await run(admin(argv))).needFile).to.equal('a.pub');
    expect((await run(admin(argv, { 'a.pub': a }))).needFile).to.equal('b.pub');
    const done = await run(admin(argv, { 'a.pub': a, 'b.pub': b + a }));
    expect(done.exitCode).to.equal(0);
    expect(hn.specs.get('hn1')?.sshKeys).to.deep.equal([a.trim(), b.trim()]);
  });

  it('refuses a missing file, a private key and junk in one line, creating nothing', async () => {
    const argv = ['headnode', 'create', 'hn1', '--owner', 'alice', '--ssh-key', 'k'];
    await run(admin(argv, {}, ['k'])).then(
      () => expect.fail('created'),
      (e: Error) => expect(e).to.be.instanceOf(UsageError).and.have.property('message', '--ssh-key k: no such file'),
    );
    const priv = readFileSync(join(dir, 'alice-laptop'), 'utf8');
    await run(admin(argv, { k: priv })).then(
      () => expect.fail('created'),
      (e: Error) =>
        expect(e)
          .to.be.instanceOf(SshKeyError)
          .and.have.property('message')
          .that.matches(/^k line 1: this is a private key/),
    );
    await run(admin(argv, { k: 'hello world\n' })).then(
      () => expect.fail('created'),
      (e: Error) => expect(e.message).to.match(/^k line 1: key type 'hello' is not taken/),
    );
    expect(hn.specs.size).to.equal(0);
  });

  it('ssh-key add, list and remove (by comment) on the admin socket', async () => {
    await hn.create({ name: 'hn1', owner: 'alice', group: 'alice', memMiB: 512, vcpus: 1, diskGiB: 4, sshKeys: [a.trim()] });
    const add = await run(admin(['headnode', 'ssh-key', 'add', 'hn1', 'b.pub'], { 'b.pub': b }));
    expect(add.stdout).to.contain('alice-desk');
    expect(hn.specs.get('hn1')?.sshKeys).to.have.length(2);
    const rm = await run(admin(['headnode', 'ssh-key', 'remove', 'hn1', 'alice-laptop']));
    expect(hn.specs.get('hn1')?.sshKeys).to.deep.equal([b.trim()]);
    expect(rm.stdout).to.contain('no SSH port (the administrator sets GC_SSH_ADDR)');
    await run(admin(['headnode', 'ssh-key', 'remove', 'hn1', 'alice-laptop'])).then(
      () => expect.fail('removed twice'),
      (e: Error) => expect(e.message).to.match(/no such key/),
    );
  });

  it("a guest changes its own headnode's keys (NAME optional), never another's", async () => {
    await hn.create({ name: 'hn1', owner: 'alice', group: 'alice', memMiB: 512, vcpus: 1, diskGiB: 4 });
    await hn.create({ name: 'hn2', owner: 'bob', group: 'bob', memMiB: 512, vcpus: 1, diskGiB: 4 });
    const guest = (argv: string[], files: Record<string, string> = {}): ToolRequest => ({
      ...admin(argv, files),
      actor: { kind: 'guest', identity: { vmId: 'hn1', kind: 'headnode', headnode: 'hn1', owner: 'alice', group: 'alice' } },
    });
    await run(guest(['headnode', 'ssh-key', 'add', 'a.pub'], { 'a.pub': a }));
    expect(hn.specs.get('hn1')?.sshKeys).to.deep.equal([a.trim()]);
    await run(guest(['headnode', 'ssh-key', 'add', 'hn2', 'a.pub'], { 'a.pub': a })).then(
      () => expect.fail("changed another's headnode"),
      (e: Error) => expect(e).to.be.instanceOf(PermissionError),
    );
    await run(guest(['headnode', 'ssh-key', 'list', 'hn2'])).then(
      () => expect.fail("listed another's headnode"),
      (e: Error) => expect(e).to.be.instanceOf(PermissionError),
    );
    expect(hn.specs.get('hn2')?.sshKeys).to.equal(undefined);
    await run(guest(['headnode', 'create', 'hn3', '--owner', 'alice'])).then(
      () => expect.fail('a guest created a headnode'),
      (e: Error) => expect(e).to.be.instanceOf(PermissionError),
    );
  });
});
