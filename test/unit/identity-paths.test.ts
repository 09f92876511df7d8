/**
 * Issue 13 item 8, the host-path attacks: a crafted qcow2 that reaches host files through its
 * backing or data file, and a RAM-file directory another local user prepared in /dev/shm.
 * Real qemu-img, real directories (a scratch folder in the sticky, world-writable /tmp stands
 * for /dev/shm); the other user is `nobody`.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QemuHeadnodeManager } from '../../src/headnodes/manager.js';
import type { GuestChannels } from '../../src/headnodes/types.js';
import { UntrustedImageError, assertSelfContainedImage } from '../../src/vm/image-trust.js';
import { UnsafeDirError, ensurePrivateDir } from '../../src/vm/private-dir.js';

const NOBODY = 65534;

describe('identity and paths (issue 13 item 8)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'identity-paths-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('a user-supplied qcow2 reaching host files', () => {
    const img = (name: string, args: string[]): string => {
      const p = join(dir, name);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...args.map((a) => a.replace('@', p))]);
      return p;
    };
    const channels: GuestChannels = { open: async () => '/nonexistent', close: async () => undefined };
    const noImages = {
      defaultBoot: async () => {
        throw new Error('the default image is not used here');
      },
    };
    const create = (image: string, stateDir: string): Promise<unknown> =>
      new QemuHeadnodeManager({ settings: { stateDir, ramDir: join(stateDir, 'ram') }, channels, images: noImages }).create({
        name: 'hn',
        owner: 'alice',
        group: 'users',
        memMiB: 256,
        vcpus: 1,
        diskGiB: 1,
        image,
      });

    it('refuses a qcow2 backed by /etc/passwd at gc headnode create, leaving nothing behind', async () => {
      const evil = img('passwd-backed.qcow2', ['-u', '-b', '/etc/passwd', '-F', 'raw', '@', '1M']);
      const state = join(dir, 'state-a');
      const err = await create(evil, state).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(UntrustedImageError);
      expect((err as Error).message).to.match(/backing file \(\/etc\/passwd\)/);
      expect((err as Error).message.split('\n')).to.have.length(1);
      expect(existsSync(join(state, 'headnodes', 'hn'))).to.equal(false);
    });

    it('refuses json: and protocol backing names', async () => {
      const json = img('json-backed.qcow2', ['-u', '-b', 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/shadow"}}', '-F', 'raw', '@', '1M']);
      await expectRefused(json, /backing file \(json:/);
      const nbd = img('nbd-backed.qcow2', ['-u', '-b', 'nbd+unix:///x?socket=/run/copper.sock', '-F', 'raw', '@', '1M']);
      await expectRefused(nbd, /backing file \(nbd/);
    });

    it('refuses an external data file', async () => {
      const target = join(dir, 'victim.raw');
      writeFileSync(target, Buffer.alloc(1024 * 1024));
      const evil = img('data-file.qcow2', ['-o', `data_file=${target},data_file_raw=on`, '@', '1M']);
      await expectRefused(evil, /data file/);
    });

    it('refuses a raw file passed as the image and a protocol name', async () => {
      const raw = join(dir, 'plain.raw');
      writeFileSync(raw, Buffer.alloc(65536));
      await expectRefused(raw, /not a readable qcow2/);
      await expectRefused('json:{"driver":"file","filename":"/etc/passwd"}', /not an absolute file path/);
    });

    it('accepts a self-contained qcow2', async () => {
      await assertSelfContainedImage(img('clean.qcow2', ['@', '1M']));
    });

    async function expectRefused(path: string, re: RegExp): Promise<void> {
      const err = await assertSelfContainedImage(path).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, path).to.be.instanceOf(UntrustedImageError);
      expect((err as Error).message).to.match(re);
    }
  });

  describe('the RAM-file directory', () => {
    // A stand-in for /dev/shm: world-writable and sticky, as /dev/shm is.
    let shm: string;
    before(() => {
      shm = join(dir, 'shm');
      mkdirSync(shm);
      chmodSync(shm, 0o1777);
    });

    it('is made mode 0700, owned by gcd, all the way down from the shared folder', async () => {
      const ram = join(shm, 'copper', 'var_lib_copper', 'snapshots');
      await ensurePrivateDir(ram);
      for (const p of [join(shm, 'copper'), join(shm, 'copper', 'var_lib_copper'), ram]) {
        const st = lstatSync(p);
        expect(st.isDirectory(), p).to.equal(true);
        expect(st.mode & 0o777, p).to.equal(0o700);
        expect(st.uid, p).to.equal(process.geteuid?.());
      }
      await ensurePrivateDir(ram); // again: it is ours, accepted
    });

    it('refuses a copper folder another user made first', async () => {
      const pre = join(shm, 'pre');
      mkdirSync(pre, { mode: 0o777 });
      chownSync(pre, NOBODY, NOBODY);
      await expectUnsafe(join(pre, 'x', 'snapshots'), /owned by uid 65534/);
      expect(existsSync(join(pre, 'x')), 'nothing made inside it').to.equal(false);
    });

    it('refuses a symlink planted where the folder should be', async () => {
      const elsewhere = join(dir, 'attacker-dir');
      mkdirSync(elsewhere);
      symlinkSync(elsewhere, join(shm, 'link'));
      await expectUnsafe(join(shm, 'link', 'snapshots'), /symbolic link/);
      expect(existsSync(join(elsewhere, 'snapshots'))).to.equal(false);
    });

    it('refuses a folder of ours that others may write in', async () => {
      const loose = join(shm, 'loose');
      mkdirSync(loose);
      chmodSync(loose, 0o777);
      await expectUnsafe(join(loose, 'headnodes'), /others may write/);
    });

    async function expectUnsafe(path: string, re: RegExp): Promise<void> {
      const err = await ensurePrivateDir(path).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, path).to.be.instanceOf(UnsafeDirError);
      expect((err as Error).message).to.match(re);
    }
  });
});
