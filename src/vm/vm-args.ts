import { basename, dirname, join } from 'node:path';
import { UsageError } from '../errors.js';
import type { Accel } from './accel.js';

/**
 * The qemu-system-x86_64 command line for a headnode and for its clones.
 *
 * A clone is restored from the headnode's migration stream, so the machine type, CPU model
 * and every migrated device must be identical on both sides; one pure builder guarantees it.
 * The only differences allowed between a headnode and its clone are things the migration
 * stream does not carry: file paths, socket paths, `share=` of the RAM file, `-incoming`.
 *
 * Layout (fixed PCI slots, so optional devices never shift the others):
 *   00.0 host bridge, 01.x PIIX3 (i440fx "pc" machine)
 *   03.0 virtio-net-pci  nic0  user networking (slirp) + guestfwd 10.0.2.100:80 -> apiSocket
 *                              (+ optional guestfwd 10.0.2.101:22 -> gcd's sftp gate -> confined sftp-server)
 *                              (+ a headnode's optional hostfwd ADDR:PORT -> 10.0.2.15:22)
 *   04.0 virtio-blk-pci  vda   drive = block node DISK_NODE (qcow2) over DISK_FILE_NODE (file)
 *   05.0 virtio-serial-pci vser0, port "org.qemu.guest_agent.0" -> qgaSocket
 *   06.0 virtio-rng-pci  rng0  (host /dev/urandom: clones get fresh entropy)
 *   07.0 virtio-9p-pci   fs0   optional sharedDir, mount tag "copper"
 *   08.0 virtio-net-pci  nic1  optional cluster network (ClusterNic)
 *   ISA serial ttyS0 -> consoleSocket; vmgenid (ACPI) with guid=auto: new GUID per QEMU
 *   process, so a restored clone's kernel reseeds its RNG (Linux >= 5.18).
 * No balloon, no virtio-mem, no vhost-user: they do not mix with x-ignore-shared. Memory grows by
 * pc-dimm into the -m slots (mem-hotplug.ts), vCPUs into -smp maxcpus (vcpu-hotplug.ts).
 */

/** Block node names; QMP `blockdev-snapshot-sync` targets DISK_NODE. */
export const DISK_NODE = 'disk0';
export const DISK_FILE_NODE = 'disk0-file';
/** qdev id of the disk; the migration stream refers to devices by qdev path, not node name. */
export const DISK_DEVICE_ID = 'vda';
export const RAM_BACKEND_ID = 'mem0';
export const GUEST_AGENT_PORT = 'org.qemu.guest_agent.0';
export const SHARE_MOUNT_TAG = 'copper';
/** The default machine: i440fx works with memory-backend-file + x-ignore-shared on 7.2. */
export const DEFAULT_MACHINE = 'pc';
/** Guest-side address of the shared volume's SFTP server (a guestfwd, see sftpSandboxCommand). */
export const SHARED_SFTP_ADDR = '10.0.2.101';
export const SHARED_SFTP_PORT = 22;
/** Where the host folder appears inside the sandbox; also the guest's mount point. */
export const SHARED_MOUNT = '/shared';
/** OpenSSH's SFTP subsystem (Debian package openssh-sftp-server). */
export const SFTP_SERVER = '/usr/lib/openssh/sftp-server';
/** `-sandbox`: the seccomp groups QEMU 7.2 accepts; spawn=deny or elevateprivileges=deny break guestfwd (see buildVmArgs). */
export const QEMU_SANDBOX = 'on,obsolete=deny,elevateprivileges=allow,spawn=allow,resourcecontrol=deny';
/** The guest's static address on the user network (copper-init); a hostfwd's target. */
export const GUEST_ADDR = '10.0.2.15';
/** Fixed MAC: it is migrated state anyway, and slirp is private to each QEMU process. */
export const NIC_MAC = '52:54:00:12:34:56';

/**
 * Optional second NIC (slot 8) on a shared L2 so a headnode and its clones can talk.
 * The MAC is migrated device state: a clone cannot change it on its command line. Virtual
 * clusters (src/clusters) hot-plug it into the headnode, and each clone sets its own MAC
 * from inside the guest after the restore; only the backend here differs per VM.
 */
export type ClusterNic =
  | {
      kind: 'mcast';
      /** e.g. 230.0.0.1:1234 */ mcast: string;
      mac: string;
      /** Host address to send and join on; 127.0.0.1 keeps the L2 on this host's loopback. */
      localaddr?: string;
    }
  | { kind: 'tap'; ifname: string; mac: string }
  /** The device without a network behind it (a hub with one port): frames go nowhere. */
  | { kind: 'isolated'; mac: string };

export interface VmConfig {
  /** Headnode name or clone id; becomes `-name`. */
  vmId: string;
  accel: Accel;
  memMiB: number;
  vcpus: number;
  /** -smp maxcpus: hot-pluggable CPU slots; must be identical for a headnode and its clones. */
  maxVcpus?: number;
  /**
   * -m maxmem and slots: room for pc-dimm memory a clone gets hot-plugged (mem-hotplug.ts).
   * Both must be identical for a headnode and its clones; without them memory cannot grow.
   */
  maxMemMiB?: number;
  memSlots?: number;
  /** Guest RAM file (memory-backend-file); put it on tmpfs. */
  ramFile: string;
  /** true for a headnode (share=on: the file IS the RAM); false for a clone (MAP_PRIVATE COW). */
  ramShare: boolean;
  /**
   * Allocate and map every page of the RAM file at start (a headnode): the first background
   * snapshot then need not fault the whole RAM in while the headnode is paused (~150 ms at
   * 512 MiB). Costs what the first snapshot would cost anyway: the file is full RAM size.
   */
  ramPrealloc?: boolean;
  /** The VM's top qcow2 (may have a backing chain). */
  disk: string;
  /** Direct kernel boot; omitted for images with their own boot loader. */
  kernel?: string;
  initrd?: string;
  /** Kernel command line; only with `kernel`. */
  append?: string;
  qmpSocket: string;
  qgaSocket: string;
  /** Serial console (ttyS0) as a Unix socket server, for `gc console`. */
  consoleSocket: string;
  /** Optional host file that also receives everything the serial console prints. */
  consoleLog?: string;
  /** gcd's per-VM API socket; QEMU runs `socat -lf /dev/null - UNIX-CONNECT:<apiSocket>` per guest connection. */
  apiSocket: string;
  /** Start paused, waiting for QMP `migrate-incoming` (a clone). */
  incoming?: boolean;
  /**
   * Host folder exported over virtio-9p (mount tag "copper").
   * Caution: QEMU blocks migration while the guest has a 9p share mounted, so a headnode
   * that mounts it cannot be snapshotted until it unmounts it.
   */
  sharedDir?: string;
  /**
   * The owner's shared volume: a guestfwd 10.0.2.101:22 whose every connection reaches gcd's
   * gate for that owner (sftpGateSocket), which runs OpenSSH's sftp-server in a bubblewrap
   * sandbox that holds only `dir` (as /shared) and what the server needs to run. The guest mounts it with sshfs -o directport=22. Unlike 9p it does not block
   * migration (the connection is slirp state; a clone reconnects, see clone-init).
   */
  sharedSftp?: { dir: string };
  clusterNic?: ClusterNic;
  /**
   * A headnode's SSH port: QEMU listens on addr:port on the host and forwards each connection
   * to the guest's port 22 (hostfwd). Never part of a snapshot (FrozenVm), so a clone's QEMU
   * forwards nothing: a clone never answers on its headnode's address.
   */
  sshForward?: { addr: string; port: number };
  /** Machine type; must be identical for a headnode and its clones. Default DEFAULT_MACHINE. */
  machine?: string;
  /** CPU model; default `host` under KVM, `max` under TCG. Must match between snapshot and clone. */
  cpu?: string;
  /** TCG translation buffer size in MiB (QEMU's default is 1 GiB of address space per VM). */
  tcgTbMiB?: number;
  pidFile?: string;
  /** Executable QEMU runs for the guestfwd channel (default `socat`, found on PATH). */
  socat?: string;
  /**
   * The unprivileged uid QEMU runs as (vm-uid.ts): the headnode's, shared by its snapshots
   * and clones. Not on the command line (VmProcess.spawn runs QEMU as it); also names the
   * shared volume's gate socket this VM may reach.
   */
  uid?: number;
}

/** Longest path a Unix socket address can hold (sun_path is 108 bytes incl. NUL). */
const MAX_SOCKET_PATH = 107;

export function buildVmArgs(cfg: VmConfig): string[] {
  validate(cfg);
  const args: string[] = [
    '-name',
    `${cfg.vmId},debug-threads=on`,
    '-nodefaults',
    '-no-user-config',
    // seccomp: QEMU's default deny list (mount, reboot, kexec, swapon, ...), no obsolete
    // syscalls, no scheduler/affinity changes. Spawning stays allowed: guestfwd runs socat per
    // guest connection and snapshots run `exec:cat`; so does set*id, because libslirp's
    // guestfwd child calls setsid() before its exec (elevateprivileges=deny kills it).
    '-sandbox',
    QEMU_SANDBOX,
    '-display',
    'none',
    '-accel',
    accelOption(cfg),
    '-machine',
    `${cfg.machine ?? DEFAULT_MACHINE},memory-backend=${RAM_BACKEND_ID}`,
    '-cpu',
    cfg.cpu ?? (cfg.accel === 'kvm' ? 'host' : 'max'),
    '-smp',
    cfg.maxVcpus !== undefined && cfg.maxVcpus > cfg.vcpus ? `${cfg.vcpus},maxcpus=${cfg.maxVcpus}` : String(cfg.vcpus),
    '-m',
    memOption(cfg),
    '-object',
    `memory-backend-file,id=${RAM_BACKEND_ID},size=${cfg.memMiB}M,mem-path=${esc(cfg.ramFile)},share=${cfg.ramShare ? 'on' : 'off'}${cfg.ramPrealloc === true ? ',prealloc=on' : ''}`,
    '-rtc',
    'base=utc,clock=host',
  ];

  if (cfg.kernel !== undefined) {
    args.push('-kernel', cfg.kernel);
    if (cfg.initrd !== undefined) args.push('-initrd', cfg.initrd);
    if (cfg.append !== undefined) args.push('-append', cfg.append);
  }

  // QMP control socket
  args.push('-chardev', `socket,id=qmp0,path=${esc(cfg.qmpSocket)},server=on,wait=off`, '-mon', 'chardev=qmp0,mode=control');

  // Serial console on ttyS0
  const log = cfg.consoleLog !== undefined ? `,logfile=${esc(cfg.consoleLog)},logappend=on` : '';
  args.push('-chardev', `socket,id=con0,path=${esc(cfg.consoleSocket)},server=on,wait=off${log}`, '-serial', 'chardev:con0');

  // User networking + the guest's channel to gcd. libslirp connects the command's stderr to
  // the guest's TCP stream too, so socat must log elsewhere: its error messages would otherwise
  // reach the guest as a corrupt HTTP answer (and show host paths).
  const socat = cfg.socat ?? 'socat';
  const sftp =
    cfg.sharedSftp !== undefined
      ? `,guestfwd=tcp:${SHARED_SFTP_ADDR}:${SHARED_SFTP_PORT}-cmd:${socat} -lf /dev/null - UNIX-CONNECT:${sftpGateSocket(cfg.sharedSftp.dir, cfg.uid)}`
      : '';
  const ssh = cfg.sshForward !== undefined ? `,hostfwd=tcp:${cfg.sshForward.addr}:${cfg.sshForward.port}-${GUEST_ADDR}:22` : '';
  args.push(
    '-netdev',
    `user,id=net0${ssh},guestfwd=tcp:10.0.2.100:80-cmd:${socat} -lf /dev/null - UNIX-CONNECT:${cfg.apiSocket}${sftp}`,
    '-device',
    `virtio-net-pci,netdev=net0,id=nic0,mac=${NIC_MAC},bus=pci.0,addr=0x3`,
  );

  // Disk: explicit blockdev nodes so QMP can name them
  args.push(
    '-blockdev',
    `driver=file,node-name=${DISK_FILE_NODE},filename=${esc(cfg.disk)},aio=threads,cache.direct=off,discard=unmap`,
    '-blockdev',
    `driver=qcow2,node-name=${DISK_NODE},file=${DISK_FILE_NODE},discard=unmap`,
    '-device',
    // werror=report: a write that fails (the host's disk full) is an I/O error in this guest;
    // QEMU's default (enospc) would pause the VM until space is freed (issue 13 item 9).
    `virtio-blk-pci,drive=${DISK_NODE},id=${DISK_DEVICE_ID},bus=pci.0,addr=0x4,werror=report,rerror=report${cfg.kernel === undefined ? ',bootindex=0' : ''}`,
  );

  // Guest agent
  args.push(
    '-device',
    'virtio-serial-pci,id=vser0,bus=pci.0,addr=0x5',
    '-chardev',
    `socket,id=qga0,path=${esc(cfg.qgaSocket)},server=on,wait=off`,
    '-device',
    `virtserialport,bus=vser0.0,chardev=qga0,name=${GUEST_AGENT_PORT}`,
  );

  args.push(
    '-object',
    'rng-random,id=rng0,filename=/dev/urandom',
    '-device',
    'virtio-rng-pci,rng=rng0,id=rng0dev,bus=pci.0,addr=0x6',
    '-device',
    'vmgenid,guid=auto',
  );

  if (cfg.sharedDir !== undefined) {
    args.push(
      '-fsdev',
      `local,id=fs0,path=${esc(cfg.sharedDir)},security_model=passthrough`,
      '-device',
      `virtio-9p-pci,fsdev=fs0,mount_tag=${SHARE_MOUNT_TAG},bus=pci.0,addr=0x7`,
    );
  }

  if (cfg.clusterNic !== undefined) args.push(...clusterNicArgs(cfg.clusterNic));
  if (cfg.pidFile !== undefined) args.push('-pidfile', cfg.pidFile);
  if (cfg.incoming === true) args.push('-incoming', 'defer');
  return args;
}

/** The dynamic loader and libc sftp-server links against (Debian bookworm: nothing else). */
function sftpServerLibs(arch: string = process.arch): string[] {
  if (arch === 'arm64') return ['/lib/ld-linux-aarch64.so.1', '/lib/aarch64-linux-gnu/libc.so.6'];
  return ['/lib64/ld-linux-x86-64.so.2', '/lib/x86_64-linux-gnu/libc.so.6'];
}

/**
 * Where gcd serves an owner's shared volume (sftp-gate.ts): `<state>/run/sftp/<owner>.sock` for
 * `<state>/shared/<owner>`; a VM running as its own uid reaches it through
 * `<owner>.u<uid>.sock`, owned by that uid alone (vm-uid.ts): no other user's VM can connect.
 */
export function sftpGateSocket(dir: string, uid?: number): string {
  return join(dirname(dirname(dir)), 'run', 'sftp', `${basename(dir)}${uid !== undefined ? `.u${uid}` : ''}.sock`);
}

/** The folder of an owner's session slots (one lock file per allowed session). */
export function sftpSlotsDir(dir: string): string {
  return join(dirname(dirname(dir)), 'run', 'sftp', `${basename(dir)}.slots`);
}

/**
 * One SFTP session over the connection on stdin/stdout, as `sh -c SCRIPT copper-sftp SLOTS MAX
 * DIR`; gcd runs it for each connection to an owner's gate socket (sftp-gate.ts), never QEMU:
 * a QEMU under `-sandbox on` cannot run bwrap (its seccomp filter, inherited, kills mount and
 * setsid). The session first takes one of MAX lock files in SLOTS (`flock -n`, held until it
 * ends, even across a gcd restart): with none free the connection is closed, so a user's VMs
 * together hold at most MAX sandboxes. bwrap builds a read-only tmpfs root holding only the
 * sftp-server binary, the loader and libc, a /dev that is read-only too (nothing can be stored
 * in it: a writable /dev would be RAM without a limit), a one-line /etc/passwd (sftp-server
 * refuses to start without an entry for its uid) and DIR read-write at /shared; no network, no
 * capabilities, its own pid/ipc/uts namespaces. stderr goes to /dev/null, sftp-server logs to
 * syslog, which is not there. fd 4 keeps the connection while the pipe from printf becomes
 * bwrap's fd 3 (--file 3).
 */
export function sftpSandboxArgv(dir: string, maxSessions: number, arch: string = process.arch): string[] {
  const libs = sftpServerLibs(arch).flatMap((l) => ['--ro-bind', l, l]);
  const bwrap = [
    'bwrap',
    '--unshare-all',
    '--die-with-parent',
    '--new-session',
    '--cap-drop',
    'ALL',
    '--clearenv',
    '--dev',
    '/dev',
    '--remount-ro',
    '/dev',
    '--file',
    '3',
    '/etc/passwd',
    '--ro-bind',
    SFTP_SERVER,
    '/sftp-server',
    ...libs,
    '--bind',
    '"$3"',
    SHARED_MOUNT,
    '--remount-ro',
    '/',
    '--chdir',
    SHARED_MOUNT,
    '/sftp-server',
    '-d',
    SHARED_MOUNT,
  ].join(' ');
  const script = [
    'exec 4<&0 2>/dev/null',
    'i=0',
    'while [ "$i" -lt "$2" ]; do',
    '  i=$((i+1))',
    `  printf "root:x:0:0::${SHARED_MOUNT}:/nonexistent\\n" | flock -n -E 75 "$1/$i" ${bwrap} 3<&0 0<&4 4<&-`,
    '  [ "$?" -eq 75 ] || exit 0',
    'done',
    'exit 75',
  ].join('\n');
  return ['sh', '-c', script, 'copper-sftp', sftpSlotsDir(dir), String(maxSessions), dir];
}

/** sftpSandboxArgv as one shell line (for `sftp -D` in tests and by hand). */
export function sftpSandboxCommand(dir: string, maxSessions = 8, arch: string = process.arch): string {
  return sftpSandboxArgv(dir, maxSessions, arch)
    .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
    .join(' ');
}

/** `-m SIZE[,slots=N,maxmem=M]`: with slots, the guest can take hot-plugged DIMMs. */
function memOption(cfg: VmConfig): string {
  const grows = cfg.maxMemMiB !== undefined && cfg.memSlots !== undefined && cfg.memSlots > 0 && cfg.maxMemMiB > cfg.memMiB;
  return grows ? `${cfg.memMiB}M,slots=${cfg.memSlots},maxmem=${cfg.maxMemMiB}M` : `${cfg.memMiB}M`;
}

function accelOption(cfg: VmConfig): string {
  if (cfg.accel === 'kvm') return 'kvm';
  return cfg.tcgTbMiB !== undefined ? `tcg,tb-size=${cfg.tcgTbMiB}` : 'tcg';
}

function clusterNicArgs(nic: ClusterNic): string[] {
  const backend =
    nic.kind === 'mcast'
      ? `socket,id=net1,mcast=${nic.mcast}${nic.localaddr !== undefined ? `,localaddr=${nic.localaddr}` : ''}`
      : nic.kind === 'tap'
        ? `tap,id=net1,ifname=${esc(nic.ifname)},script=no,downscript=no`
        : 'hubport,id=net1,hubid=0';
  return ['-netdev', backend, '-device', `virtio-net-pci,netdev=net1,id=nic1,mac=${nic.mac},bus=pci.0,addr=0x8`];
}

/** QemuOpts values escape a comma by doubling it. */
function esc(value: string): string {
  return value.replace(/,/g, ',,');
}

const SAFE_PATH = /^[A-Za-z0-9_./@+-]+$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

function validate(cfg: VmConfig): void {
  const bad = (what: string): never => {
    throw new UsageError(`invalid VM config for '${cfg.vmId}': ${what}`);
  };
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(cfg.vmId)) bad(`vmId '${cfg.vmId}'`);
  if (!Number.isInteger(cfg.memMiB) || cfg.memMiB < 64) bad(`memMiB ${cfg.memMiB} (integer >= 64)`);
  if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1 || cfg.vcpus > 255) bad(`vcpus ${cfg.vcpus}`);
  if (cfg.maxVcpus !== undefined && (!Number.isInteger(cfg.maxVcpus) || cfg.maxVcpus < cfg.vcpus || cfg.maxVcpus > 255)) {
    bad(`maxVcpus ${cfg.maxVcpus} (from vcpus to 255)`);
  }
  if (cfg.maxMemMiB !== undefined && (!Number.isInteger(cfg.maxMemMiB) || cfg.maxMemMiB < cfg.memMiB)) {
    bad(`maxMemMiB ${cfg.maxMemMiB} (an integer, at least memMiB)`);
  }
  // QEMU's ACPI memory hotplug has 256 slots.
  if (cfg.memSlots !== undefined && (!Number.isInteger(cfg.memSlots) || cfg.memSlots < 0 || cfg.memSlots > 256)) bad(`memSlots ${cfg.memSlots} (0 to 256)`);
  if (cfg.tcgTbMiB !== undefined && (!Number.isInteger(cfg.tcgTbMiB) || cfg.tcgTbMiB < 1)) {
    bad(`tcgTbMiB ${cfg.tcgTbMiB}`);
  }
  for (const [name, path] of [
    ['ramFile', cfg.ramFile],
    ['disk', cfg.disk],
    ['qmpSocket', cfg.qmpSocket],
    ['qgaSocket', cfg.qgaSocket],
    ['consoleSocket', cfg.consoleSocket],
    ['apiSocket', cfg.apiSocket],
  ] as const) {
    if (!path.startsWith('/')) bad(`${name} must be an absolute path, got '${path}'`);
  }
  for (const [name, path] of [
    ['qmpSocket', cfg.qmpSocket],
    ['qgaSocket', cfg.qgaSocket],
    ['consoleSocket', cfg.consoleSocket],
    ['apiSocket', cfg.apiSocket],
  ] as const) {
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH) bad(`${name} is longer than ${MAX_SOCKET_PATH} bytes: '${path}'`);
  }
  // The guestfwd command is split like a shell line by libslirp and parsed again by socat,
  // where ',', ':' and spaces are special: only allow plain path characters.
  if (!SAFE_PATH.test(cfg.apiSocket)) bad(`apiSocket contains characters socat cannot take: '${cfg.apiSocket}'`);
  if (cfg.socat !== undefined && !SAFE_PATH.test(cfg.socat)) bad(`socat path '${cfg.socat}'`);
  if (
    cfg.sharedSftp !== undefined &&
    (!cfg.sharedSftp.dir.startsWith('/') || !SAFE_PATH.test(cfg.sharedSftp.dir) || cfg.sharedSftp.dir.split('/').includes('..'))
  ) {
    bad(`shared folder '${cfg.sharedSftp.dir}' (an absolute path of plain characters)`);
  }
  const fwd = cfg.sshForward;
  if (fwd !== undefined) {
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(fwd.addr)) bad(`ssh forward address '${fwd.addr}' (an IPv4 address)`);
    if (!Number.isInteger(fwd.port) || fwd.port < 1 || fwd.port > 65535) bad(`ssh forward port ${fwd.port}`);
  }
  if (cfg.kernel === undefined && (cfg.initrd !== undefined || cfg.append !== undefined)) {
    bad('initrd/append given without kernel');
  }
  if (cfg.append !== undefined && /[\n\0]/.test(cfg.append)) bad('append contains a newline or NUL');
  const machine = cfg.machine ?? DEFAULT_MACHINE;
  if (!/^[A-Za-z0-9_.-]+$/.test(machine)) bad(`machine '${machine}'`);
  if (cfg.cpu !== undefined && !/^[A-Za-z0-9_.,=+-]+$/.test(cfg.cpu)) bad(`cpu '${cfg.cpu}'`);
  const nic = cfg.clusterNic;
  if (nic !== undefined) {
    if (!MAC.test(nic.mac)) bad(`cluster NIC MAC '${nic.mac}'`);
    if (nic.mac.toLowerCase() === NIC_MAC) bad('cluster NIC MAC equals the main NIC MAC');
    if (nic.kind === 'mcast' && !/^[0-9.]+:[0-9]+$/.test(nic.mcast)) bad(`mcast address '${nic.mcast}'`);
    if (nic.kind === 'mcast' && nic.localaddr !== undefined && !/^[0-9.]+$/.test(nic.localaddr)) bad(`mcast localaddr '${nic.localaddr}'`);
    if (nic.kind === 'tap' && !/^[A-Za-z0-9_.-]{1,15}$/.test(nic.ifname)) bad(`tap ifname '${nic.ifname}'`);
  }
}
