import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSettings, SettingError } from '../../src/config/settings.js';
import { UsageError } from '../../src/errors.js';
import { pickSshPort, portFree, sshAccessInfo } from '../../src/headnodes/ssh-access.js';
import { mergeSshKeys, parseSshKey, parseSshKeyFile, removeSshKeys, SshKeyError } from '../../src/headnodes/ssh-keys.js';
import { frozenVm } from '../../src/vm/snapshots/types.js';
import { buildVmArgs, type VmConfig } from '../../src/vm/vm-args.js';

/** A real key pair made by ssh-keygen (openssh-client), and the fingerprint ssh-keygen -l gives. */
function keygen(dir: string, name: string, type = 'ed25519'): { pub: string; fp: string; priv: string } {
  const f = join(dir, name);
  const r = spawnSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', `${name}@test`, '-f', f], { encoding: 'utf8' });
  expect(r.status, r.stderr).to.equal(0);
  const l = spawnSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${f}.pub`], { encoding: 'utf8' });
  return { pub: readFileSync(`${f}.pub`, 'utf8'), fp: l.stdout.split(' ')[1], priv: readFileSync(f, 'utf8') };
}

const cfg: VmConfig = {
  vmId: 'alice-hn',
  accel: 'tcg',
  memMiB: 512,
  vcpus: 1,
  ramFile: '/dev/shm/x.ram',
  ramShare: true,
  disk: '/var/lib/copper/d.qcow2',
  qmpSocket: '/run/q',
  qgaSocket: '/run/g',
  consoleSocket: '/run/c',
  apiSocket: '/run/a.sock',
};

describe('SSH into a headnode: keys, ports, the QEMU forward', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ssh-lane-unit-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("takes real public keys and names them by ssh-keygen's own fingerprint", () => {
    for (const type of ['ed25519', 'ecdsa', 'rsa']) {
      const k = keygen(dir, `k-${type}`, type);
      const parsed = parseSshKeyFile(k.pub, 'id.pub');
      expect(parsed).to.have.length(1);
      expect(parsed[0].fingerprint).to.equal(k.fp);
      expect(parsed[0].comment).to.equal(`k-${type}@test`);
    }
  });

  it('refuses a private key, options, junk and a key whose data is not of its type', () => {
    const k = keygen(dir, 'k2');
    expect(() => parseSshKeyFile(k.priv, 'id')).to.throw(SshKeyError, /private key: give the public one/);
    expect(() => parseSshKey(`command="/bin/sh" ${k.pub}`, 'f')).to.throw(SshKeyError, /not an OpenSSH public key line/);
    expect(() => parseSshKeyFile('\n# nothing\n', 'empty.pub')).to.throw(SshKeyError, /no public key in it/);
    const [type, b64] = k.pub.split(' ');
    expect(() => parseSshKey(`ssh-rsa ${b64}`, 'f')).to.throw(SshKeyError, /does not match its type/);
    expect(() => parseSshKey(`${type} ${b64.slice(0, 10)}`, 'f')).to.throw(SshKeyError, /does not match|not an OpenSSH/);
    expect(() => parseSshKey(`ssh-dss ${b64}`, 'f')).to.throw(SshKeyError, /key type 'ssh-dss' is not taken/);
  });

  it('adds a key once, removes by fingerprint, file or comment, and says when nothing matched', () => {
    const a = parseSshKeyFile(keygen(dir, 'ka').pub, 'a')[0];
    const b = parseSshKeyFile(keygen(dir, 'kb').pub, 'b')[0];
    const both = mergeSshKeys(mergeSshKeys([], [a]), [a, b]);
    expect(both).to.deep.equal([a.line, b.line]);
    expect(removeSshKeys(both, { fingerprints: new Set([a.fingerprint]) })).to.deep.equal([b.line]);
    expect(removeSshKeys(both, { fingerprints: new Set(), comment: 'kb@test' })).to.deep.equal([a.line]);
    expect(() => removeSshKeys([a.line], { fingerprints: new Set([b.fingerprint]) })).to.throw(UsageError, /no such key/);
  });

  it("forwards the headnode's port to the guest's 22, and a clone's VM layout has no forward", () => {
    const hn = buildVmArgs({ ...cfg, sshForward: { addr: '127.0.0.1', port: 2222 } });
    const netdev = hn[hn.indexOf('-netdev') + 1];
    expect(netdev).to.match(/^user,id=net0,hostfwd=tcp:127\.0\.0\.1:2222-10\.0\.2\.15:22,guestfwd=/);
    const frozen = frozenVm({ ...cfg, sshForward: { addr: '127.0.0.1', port: 2222 } });
    expect(frozen).not.to.have.property('sshForward');
    const clone = buildVmArgs({ ...cfg, ...frozen, vmId: 'clone-1', ramShare: false, incoming: true });
    expect(clone.join(' ')).not.to.contain('hostfwd');
    expect(() => buildVmArgs({ ...cfg, sshForward: { addr: 'localhost,x', port: 22 } })).to.throw(UsageError, /ssh forward address/);
  });

  it('reads GC_SSH_ADDR and GC_SSH_PORTS, refusing bad values in one line', () => {
    const s = loadSettings({ GC_SSH_ADDR: '127.0.0.1', GC_SSH_PORTS: '3000-3009' });
    expect(s.sshAddr).to.equal('127.0.0.1');
    expect(s.sshPorts).to.deep.equal({ first: 3000, last: 3009 });
    expect(loadSettings({}).sshAddr).to.equal(undefined);
    expect(loadSettings({}).sshPorts).to.deep.equal({ first: 2200, last: 2999 });
    expect(() => loadSettings({ GC_SSH_ADDR: 'example.org' })).to.throw(SettingError, /^GC_SSH_ADDR=example.org: /);
    expect(() => loadSettings({ GC_SSH_ADDR: '300.1.1.1' })).to.throw(SettingError);
    expect(() => loadSettings({ GC_SSH_PORTS: '22-30' })).to.throw(SettingError, /FIRST-LAST/);
    expect(() => loadSettings({ GC_SSH_PORTS: '3010-3000' })).to.throw(SettingError, /FIRST-LAST/);
  });

  it('picks a port no headnode has and nothing listens on; says when none is left', async () => {
    const busy: Server = createServer();
    await new Promise<void>((r) => busy.listen({ host: '127.0.0.1', port: 0 }, r));
    const port = (busy.address() as { port: number }).port;
    try {
      expect(await portFree('127.0.0.1', port)).to.equal(false);
      const ssh = { addr: '127.0.0.1', ports: { first: port, last: port + 2 } };
      const got = await pickSshPort(ssh, new Set([port + 1]));
      expect(got).to.equal(port + 2);
      await pickSshPort({ ...ssh, ports: { first: port, last: port + 1 } }, new Set([port + 1])).then(
        () => expect.fail('a port was given'),
        (e: Error) => expect(e.message).to.match(/no free SSH port left in GC_SSH_PORTS/),
      );
    } finally {
      busy.close();
    }
    // An address that is not this host's: said as such, not as "no free port".
    await pickSshPort({ addr: '192.0.2.77', ports: { first: 2200, last: 2299 } }, new Set()).then(
      () => expect.fail('a port was given'),
      (e: Error) => expect(e.message).to.match(/^GC_SSH_ADDR=192\.0\.2\.77: cannot listen there \(EADDRNOTAVAIL\)/),
    );
  });

  it("shows the port only while GC_SSH_ADDR is set, and the host key's fingerprint", () => {
    const host = keygen(dir, 'host');
    const rec = { sshPort: 2201, sshHostKey: host.pub.trim(), spec: { sshKeys: [] } };
    expect(sshAccessInfo({ addr: '127.0.0.1', ports: { first: 1, last: 2 } }, rec)).to.deep.equal({
      addr: '127.0.0.1',
      port: 2201,
      hostKey: host.fp,
      keys: [],
    });
    expect(sshAccessInfo({ addr: undefined, ports: { first: 1, last: 2 } }, rec)).to.deep.equal({ hostKey: host.fp, keys: [] });
  });
});
