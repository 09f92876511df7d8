import { expect } from 'chai';
import { DriverError, UsageError } from '../../src/errors.js';
import { guestKernelCmdline, hasPvhNote, imageFolder } from '../../src/image/image.js';
import { moduleName, parseModulesDep, resolveModules } from '../../src/image/image-modules.js';

const DEP = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/netfs/netfs.ko:
`;

describe('image kernel modules', () => {
  it('names modules the way the kernel does', () => {
    expect(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko')).to.equal('virtio_rng');
    expect(moduleName('kernel/fs/9p/9p.ko.xz')).to.equal('9p');
  });

  it('orders dependencies first, each module once', () => {
    const order = resolveModules(parseModulesDep(DEP), ['virtio_pci', 'virtio-rng', '9p']);
    expect(order).to.deep.equal([
      'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
      'kernel/drivers/virtio/virtio.ko',
      'kernel/drivers/virtio/virtio_ring.ko',
      'kernel/drivers/virtio/virtio_pci.ko',
      'kernel/drivers/char/hw_random/virtio-rng.ko',
      'kernel/net/9p/9pnet.ko',
      'kernel/fs/netfs/netfs.ko',
      'kernel/fs/9p/9p.ko',
    ]);
  });

  it('skips built-in modules and refuses unknown ones', () => {
    expect(resolveModules(parseModulesDep(DEP), ['ext4'], new Set(['ext4']))).to.deep.equal([]);
    expect(() => resolveModules(parseModulesDep(DEP), ['nosuch'])).to.throw(DriverError);
  });
});

describe('guestKernelCmdline', () => {
  it('carries what copper-init reads', () => {
    const c = guestKernelCmdline({ hostname: 'alice-hn', share: '/mnt/host' }).split(' ');
    expect(c).to.include.members(['root=/dev/vda', 'rw', 'init=/sbin/copper-init', 'console=ttyS0', 'copper.hostname=alice-hn', 'copper.share=/mnt/host']);
    expect(guestKernelCmdline({ hostname: 'x', debug: true })).to.contain('copper.debug=1');
    expect(guestKernelCmdline({ hostname: 'x', sftp: true }).split(' ')).to.include('copper.sftp=1');
    expect(guestKernelCmdline({ hostname: 'x' })).not.to.contain('copper.sftp');
  });

  it('refuses values that would split the command line', () => {
    expect(() => guestKernelCmdline({ hostname: 'a b' })).to.throw(UsageError);
    expect(() => guestKernelCmdline({ hostname: 'ok', share: '/a b' })).to.throw(UsageError);
  });
});

describe('hasPvhNote', () => {
  /** A minimal ELF64 with one PT_NOTE segment holding one note. */
  function elfWithNote(name: string, type: number): Buffer {
    const nameBuf = Buffer.from(`${name}\0`);
    const namePad = (nameBuf.length + 3) & ~3;
    const note = Buffer.alloc(12 + namePad + 8);
    note.writeUInt32LE(nameBuf.length, 0);
    note.writeUInt32LE(8, 4);
    note.writeUInt32LE(type, 8);
    nameBuf.copy(note, 12);
    const elf = Buffer.alloc(64 + 56 + note.length);
    elf.writeUInt32BE(0x7f454c46, 0);
    elf[4] = 2;
    elf[5] = 1;
    elf.writeBigUInt64LE(64n, 32); // e_phoff
    elf.writeUInt16LE(56, 54); // e_phentsize
    elf.writeUInt16LE(1, 56); // e_phnum
    elf.writeUInt32LE(4, 64); // PT_NOTE
    elf.writeBigUInt64LE(120n, 64 + 8); // p_offset
    elf.writeBigUInt64LE(BigInt(note.length), 64 + 32); // p_filesz
    note.copy(elf, 120);
    return elf;
  }

  it('finds XEN_ELFNOTE_PHYS32_ENTRY', () => {
    expect(hasPvhNote(elfWithNote('Xen', 18))).to.equal(true);
    expect(hasPvhNote(elfWithNote('Xen', 6))).to.equal(false);
    expect(hasPvhNote(elfWithNote('GNU', 18))).to.equal(false);
    expect(hasPvhNote(Buffer.from('not an elf at all, clearly not one, no no no no no no no no no no no'))).to.equal(false);
  });
});

describe('image cache folder and GC_IMAGE_PACKAGES', () => {
  const env = { GC_IMAGE_DIR: '/nonexistent/copper-images' };
  it('extra packages make another image; none keeps the built-in image (and its cache)', async () => {
    const plain = await imageFolder({ stateDir: '/nonexistent', env });
    const none = await imageFolder({ stateDir: '/nonexistent', env: { ...env, GC_IMAGE_PACKAGES: '' } });
    const snake = await imageFolder({ stateDir: '/nonexistent', env: { ...env, GC_IMAGE_PACKAGES: 'snakemake' } });
    const same = await imageFolder({ stateDir: '/nonexistent', env, extraPackages: ['snakemake'] });
    const other = await imageFolder({ stateDir: '/nonexistent', env: { ...env, GC_IMAGE_PACKAGES: 'snakemake,r-base-core' } });
    const reordered = await imageFolder({ stateDir: '/nonexistent', env: { ...env, GC_IMAGE_PACKAGES: 'r-base-core snakemake' } });
    expect(plain).to.match(/^\/nonexistent\/copper-images\/debian-bookworm-[0-9a-f]{16}$/);
    expect(none).to.equal(plain);
    expect(snake).to.not.equal(plain);
    expect(same).to.equal(snake);
    expect(other).to.not.equal(snake);
    expect(reordered).to.equal(other);
  });
});
