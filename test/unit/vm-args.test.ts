import { expect } from 'chai';
import { cpuHasVirtFlag, detectAccel } from '../../src/vm/accel.js';
import { buildVmArgs, DISK_NODE, QEMU_SANDBOX, sftpSandboxArgv, type VmConfig } from '../../src/vm/vm-args.js';
import { UsageError } from '../../src/errors.js';

function base(over: Partial<VmConfig> = {}): VmConfig {
  return {
    vmId: 'alice-hn',
    accel: 'tcg',
    memMiB: 512,
    vcpus: 1,
    ramFile: '/dev/shm/copper/alice-hn.ram',
    ramShare: true,
    disk: '/var/lib/copper/headnodes/alice-hn/disk.qcow2',
    kernel: '/img/vmlinuz',
    initrd: '/img/initrd.img',
    append: 'root=/dev/vda rw init=/sbin/copper-init console=ttyS0',
    qmpSocket: '/run/copper/alice-hn.qmp',
    qgaSocket: '/run/copper/alice-hn.qga',
    consoleSocket: '/run/copper/alice-hn.console',
    apiSocket: '/var/lib/copper/run/channels/alice-hn.sock',
    ...over,
  };
}

/** Value following the n-th occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag && i + 1 < args.length) out.push(args[i + 1]);
  });
  return out;
}

/** The argv with everything a clone may legitimately differ in masked out. */
function layout(args: string[]): string[] {
  return args
    .filter((a) => a !== '-incoming' && a !== 'defer')
    .map((a) => a.replace(/(path|filename|mem-path)=[^,]*/g, '$1=X').replace(/share=(on|off)/, 'share=X'))
    .map((a) => a.replace(/UNIX-CONNECT:.*/, 'UNIX-CONNECT:X').replace(/^[^,]*,debug-threads=on$/, 'NAME'));
}

describe('buildVmArgs', () => {
  it('puts the RAM in a shared file for a headnode and a private one for a clone', () => {
    const hn = values(buildVmArgs(base()), '-object').find((o) => o.startsWith('memory-backend-file'));
    expect(hn).to.equal('memory-backend-file,id=mem0,size=512M,mem-path=/dev/shm/copper/alice-hn.ram,share=on');
    const cl = values(buildVmArgs(base({ ramShare: false })), '-object').find((o) => o.startsWith('memory-backend-file'));
    expect(cl).to.contain('share=off');
    expect(values(buildVmArgs(base()), '-machine')).to.deep.equal(['pc,memory-backend=mem0']);
    expect(values(buildVmArgs(base()), '-m')).to.deep.equal(['512M']);
  });

  it('gives a headnode and its clone the same machine and device layout', () => {
    const hn = buildVmArgs(base());
    const clone = buildVmArgs(
      base({
        vmId: 'j42-0',
        ramShare: false,
        ramFile: '/dev/shm/copper/snap1.ram',
        disk: '/var/lib/copper/clones/j42-0.qcow2',
        qmpSocket: '/run/copper/j42-0.qmp',
        qgaSocket: '/run/copper/j42-0.qga',
        consoleSocket: '/run/copper/j42-0.console',
        apiSocket: '/var/lib/copper/run/channels/j42-0.sock',
        incoming: true,
      }),
    );
    expect(layout(clone)).to.deep.equal(layout(hn));
    expect(clone.slice(-2)).to.deep.equal(['-incoming', 'defer']);
    expect(hn).not.to.include('-incoming');
  });

  it('names the block nodes so blockdev-snapshot-sync can target them', () => {
    const bd = values(buildVmArgs(base()), '-blockdev');
    expect(bd[0]).to.match(/^driver=file,node-name=disk0-file,filename=\/var\/lib\/copper\/headnodes\/alice-hn\/disk.qcow2,/);
    expect(bd[1]).to.match(new RegExp(`^driver=qcow2,node-name=${DISK_NODE},file=disk0-file`));
    expect(values(buildVmArgs(base()), '-device')).to.include('virtio-blk-pci,drive=disk0,id=vda,bus=pci.0,addr=0x4,werror=report,rerror=report');
  });

  it('wires the guest agent, console, QMP and the API channel', () => {
    const a = buildVmArgs(base());
    const dev = values(a, '-device');
    const chr = values(a, '-chardev');
    expect(dev).to.include('virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0');
    expect(chr).to.include('socket,id=qga0,path=/run/copper/alice-hn.qga,server=on,wait=off');
    expect(chr).to.include('socket,id=qmp0,path=/run/copper/alice-hn.qmp,server=on,wait=off');
    expect(chr).to.include('socket,id=con0,path=/run/copper/alice-hn.console,server=on,wait=off');
    expect(values(a, '-serial')).to.deep.equal(['chardev:con0']);
    expect(values(a, '-netdev')).to.deep.equal([
      'user,id=net0,guestfwd=tcp:10.0.2.100:80-cmd:socat -lf /dev/null - UNIX-CONNECT:/var/lib/copper/run/channels/alice-hn.sock',
    ]);
    expect(dev).to.include('vmgenid,guid=auto');
    expect(a.join(' ')).not.to.match(/balloon|virtio-mem|vhost/);
    expect(a).to.include('-nodefaults');
    expect(values(a, '-display')).to.deep.equal(['none']);
  });

  it("runs every VM under QEMU's seccomp sandbox, spawning allowed (guestfwd, exec: migration)", () => {
    expect(values(buildVmArgs(base()), '-sandbox')).to.deep.equal([QEMU_SANDBOX]);
    expect(QEMU_SANDBOX).to.equal('on,obsolete=deny,elevateprivileges=allow,spawn=allow,resourcecontrol=deny');
  });

  it('boots the given kernel, or the disk when there is none', () => {
    const a = buildVmArgs(base());
    expect(values(a, '-kernel')).to.deep.equal(['/img/vmlinuz']);
    expect(values(a, '-append')).to.deep.equal(['root=/dev/vda rw init=/sbin/copper-init console=ttyS0']);
    const b = buildVmArgs(base({ kernel: undefined, initrd: undefined, append: undefined }));
    expect(b).not.to.include('-kernel');
    expect(values(b, '-device').find((d) => d.startsWith('virtio-blk-pci'))).to.contain('bootindex=0');
    expect(() => buildVmArgs(base({ kernel: undefined }))).to.throw(UsageError);
  });

  it('chooses accel and CPU model', () => {
    expect(values(buildVmArgs(base()), '-accel')).to.deep.equal(['tcg']);
    expect(values(buildVmArgs(base()), '-cpu')).to.deep.equal(['max']);
    expect(values(buildVmArgs(base({ accel: 'kvm' })), '-accel')).to.deep.equal(['kvm']);
    expect(values(buildVmArgs(base({ accel: 'kvm' })), '-cpu')).to.deep.equal(['host']);
    expect(values(buildVmArgs(base({ tcgTbMiB: 128 })), '-accel')).to.deep.equal(['tcg,tb-size=128']);
  });

  it('adds the optional 9p share and cluster NIC in their own slots', () => {
    const a = buildVmArgs(base({ sharedDir: '/srv/a,b', clusterNic: { kind: 'mcast', mcast: '230.0.0.1:1234', mac: '52:54:00:00:00:02' } }));
    expect(values(a, '-fsdev')).to.deep.equal(['local,id=fs0,path=/srv/a,,b,security_model=passthrough']);
    expect(values(a, '-device')).to.include('virtio-9p-pci,fsdev=fs0,mount_tag=copper,bus=pci.0,addr=0x7');
    expect(values(a, '-netdev')[1]).to.equal('socket,id=net1,mcast=230.0.0.1:1234');
    expect(values(a, '-device')).to.include('virtio-net-pci,netdev=net1,id=nic1,mac=52:54:00:00:00:02,bus=pci.0,addr=0x8');
  });

  it("serves the owner's shared folder over a second guestfwd to gcd's sftp gate", () => {
    const net = values(buildVmArgs(base({ sharedSftp: { dir: '/var/lib/copper/shared/alice' } })), '-netdev');
    expect(net).to.have.length(1);
    const fwd = net[0].split(',guestfwd=');
    expect(fwd[1]).to.equal('tcp:10.0.2.100:80-cmd:socat -lf /dev/null - UNIX-CONNECT:/var/lib/copper/run/channels/alice-hn.sock');
    // QEMU (under -sandbox on) only connects: gcd runs the sandbox, which QEMU's seccomp filter would kill.
    expect(fwd[2]).to.equal('tcp:10.0.2.101:22-cmd:socat -lf /dev/null - UNIX-CONNECT:/var/lib/copper/run/sftp/alice.sock');
    const argv = sftpSandboxArgv('/var/lib/copper/shared/alice', 4, 'x64');
    expect(argv.slice(0, 2)).to.deep.equal(['sh', '-c']);
    expect(argv.slice(3)).to.deep.equal(['copper-sftp', '/var/lib/copper/run/sftp/alice.slots', '4', '/var/lib/copper/shared/alice']);
    const cmd = argv[2];
    expect(cmd).to.contain('exec 4<&0 2>/dev/null');
    expect(cmd).to.contain('flock -n -E 75 "$1/$i" bwrap');
    expect(cmd).to.contain('--bind "$3" /shared ');
    expect(cmd).to.contain('--unshare-all --die-with-parent');
    expect(cmd).to.contain('--cap-drop ALL');
    expect(cmd).to.contain('--dev /dev --remount-ro /dev');
    expect(cmd).to.contain('--remount-ro /');
    // Only the server, the loader and libc come from the host, read-only.
    expect(cmd.match(/--ro-bind \S+/g)).to.deep.equal([
      '--ro-bind /usr/lib/openssh/sftp-server',
      '--ro-bind /lib64/ld-linux-x86-64.so.2',
      '--ro-bind /lib/x86_64-linux-gnu/libc.so.6',
    ]);
    expect(cmd.match(/--bind \S+/g)).to.deep.equal(['--bind "$3"']);
    for (const dir of ['shared', '/x y', '/a,b', "/a'b", '/a/../b']) {
      expect(() => buildVmArgs(base({ sharedSftp: { dir } })), dir).to.throw(UsageError);
    }
  });

  it('escapes commas in paths', () => {
    const a = buildVmArgs(base({ disk: '/x,y/disk.qcow2' }));
    expect(values(a, '-blockdev')[0]).to.contain('filename=/x,,y/disk.qcow2,');
  });

  it('rejects bad configs with UsageError', () => {
    expect(() => buildVmArgs(base({ memMiB: 0 }))).to.throw(UsageError);
    expect(() => buildVmArgs(base({ vcpus: 1.5 }))).to.throw(UsageError);
    expect(() => buildVmArgs(base({ vmId: '../x' }))).to.throw(UsageError);
    expect(() => buildVmArgs(base({ apiSocket: '/tmp/a b.sock' }))).to.throw(UsageError);
    expect(() => buildVmArgs(base({ apiSocket: '/tmp/a:b.sock' }))).to.throw(UsageError);
    expect(() => buildVmArgs(base({ qmpSocket: '/' + 'x'.repeat(120) }))).to.throw(UsageError);
    expect(() => buildVmArgs(base({ disk: 'relative.qcow2' }))).to.throw(UsageError);
    expect(() => buildVmArgs(base({ clusterNic: { kind: 'tap', ifname: 'tap0', mac: '52:54:00:12:34:56' } }))).to.throw(UsageError);
  });
});

describe('detectAccel', () => {
  it('honours GC_ACCEL and rejects nonsense', () => {
    expect(detectAccel({ GC_ACCEL: 'tcg' })).to.equal('tcg');
    expect(detectAccel({ GC_ACCEL: 'kvm' })).to.equal('kvm');
    expect(() => detectAccel({ GC_ACCEL: 'xen' })).to.throw(UsageError);
  });

  it('returns one of the two accelerators without GC_ACCEL', () => {
    expect(['kvm', 'tcg']).to.include(detectAccel({}));
  });

  it('requires vmx or svm in the CPU flags', () => {
    expect(cpuHasVirtFlag('processor\t: 0\nflags\t\t: fpu vme sse2 vmx ept\n')).to.equal(true);
    expect(cpuHasVirtFlag('flags\t\t: fpu svm\n')).to.equal(true);
    expect(cpuHasVirtFlag('flags\t\t: fpu vme sse2 hypervisor\nvmx flags\t: ept\n')).to.equal(false);
  });
});
