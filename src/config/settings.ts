// One table of every GC_* setting; longer than 400 lines because each variable is declared once, here.
import { cpus, hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import { byteSize, choice, debianPackages, milliseconds, path, SettingError, text, url, wholeNumber, word, type SettingParser } from './setting-types.js';

export { SettingError } from './setting-types.js';

/**
 * Every `GC_*` environment variable Copper reads, declared once: name, value type, default,
 * meaning and check. Everything has a default so a fresh machine needs no configuration.
 * The README's settings table is tested against SETTING_DECLS (test/unit/settings.test.ts).
 * Import nothing of Copper here but errors: every floor, and the thin clients, read settings.
 */
export interface Settings {
  /** Root of all durable state: Redis data, headnodes, snapshots, job output. */
  stateDir: string;
  /** Guest RAM files live on tmpfs so that guest memory is never written back to disk. */
  ramDir: string;
  /** External Redis, or undefined for the embedded one gcd starts. */
  redisUrl: string | undefined;
  /** PBS "server" part of job ids: `<seq>.<server>`. */
  serverName: string;
  /** The admin API socket on the host. */
  socketPath: string;
  /** Prefix of every Redis key Copper owns (BullMQ keys included). */
  keyPrefix: string;
  /** Admin config folder (quotas, queues). */
  configDir: string;
  logLevel: 'error' | 'warn' | 'info' | 'debug';
  /** The job driver: QEMU; 'fake' is the test double, for tests only. */
  driver: 'qemu' | 'fake';
  /** Test double only: `name:owner[:group],...`. */
  fakeHeadnodes: string | undefined;
  /** Tests only: gcd waits this long after opening the guest channels, before recovering. */
  testStartDelayMs: number;
  /** Tests only: the crash point (crash-point.ts) at which gcd kills itself with SIGKILL. */
  testCrashAt: string | undefined;
  killDelayMs: number;
  /** After SIGTERM and the kill delay, how long a guest has to end its job before the host kills its VM. */
  guestDeadlineMs: number;
  /** Most MiB of a job's stdout (and of its stderr) brought home from its clone. */
  maxOutputMiB: number;
  /** The embedded Redis's maxmemory (noeviction): writes past it are refused, never evicted or killed. */
  redisMaxMemoryMiB: number;
  lockDurationMs: number;
  capacityNcpus: number;
  capacityMemMiB: number;
  cloneConcurrency: number;
  maxClones: number;
  /** Forced accelerator, or undefined to detect it. */
  accel: 'kvm' | 'tcg' | undefined;
  snapshotRam: 'auto' | 'copy';
  qemuBinary: string;
  /** Image cache, or undefined for `<state folder>/images`. */
  imageDir: string | undefined;
  /** Image recipe folder, or undefined for this checkout's image/. */
  imageRecipeDir: string | undefined;
  /** Debian mirror, or undefined for the host's apt source (else deb.debian.org). */
  debianMirror: string | undefined;
  /** Debian packages added to the headnode image beyond the built-in ones (snakemake, ...). */
  imagePackages: readonly string[];
  /** Per job, bytes of file content a stage-out writes into the headnode; the rest is kept on the host. */
  stageoutMaxBytes: number;
  /** Per job, most bytes kept on the host beyond stageoutMaxBytes (the rest stays in the clone, said in the comment). */
  stageoutKeepMaxBytes: number;
  /** Host tools: the headnode they act for when no --headnode is given (read from the caller's environment). */
  headnode: string | undefined;
  /** Job mail (-m/-M) through this SMTP relay, or undefined for the sendmail program. */
  smtpUrl: string | undefined;
  /** The host MTA's sendmail-compatible program. */
  sendmailPath: string;
  /** From: of job mail, or undefined for `copper@<mail domain>`. */
  mailFrom: string | undefined;
  /** Domain added to a bare user name, or undefined for the server name. */
  mailDomain: string | undefined;
  /** Where Prometheus scrapes GET /metrics (HOST:PORT); undefined or 'off': no metrics. */
  metricsAddr: string | undefined;
  /** PBS accounting files (one per day, YYYYMMDD), or 'off'. */
  accountingDir: string;
  /** The web dashboard's `host:port`, or undefined: no dashboard. */
  webAddr: string | undefined;
  /** Seconds between the dashboard's queue-depth and utilisation samples. */
  webSampleSec: number;
  /** Guest egress: private/link-local/host destinations guests may reach anyway (CIDRs). */
  guestAllow: string;
  /** Group id every QEMU runs with: the host firewall (guest-egress.ts) matches guest traffic by it. */
  vmGid: number;
  /** First uid of the range QEMUs run as: one uid per headnode, shared by its clones (vm-uid.ts). */
  vmUidBase: number;
  /** How many uids the range holds (at most this many headnodes per state folder). */
  vmUidCount: number;
  /** pids.max of each VM's cgroup (QEMU threads, guestfwd helpers). */
  vmPidsMax: number;
  /** memory.max of each VM's cgroup: its largest RAM plus this many MiB. */
  vmMemOverheadMiB: number;
  /** Concurrent /shared (sftp) sessions per user, over all their VMs. */
  sharedMaxSessions: number;
  /** Host address each headnode's SSH port listens on (QEMU hostfwd), or undefined: no SSH ports. */
  sshAddr: string | undefined;
  /** The host ports headnodes' SSH ports are taken from, `FIRST-LAST`. */
  sshPorts: { first: number; last: number };
  /** The server's node API (src/grid/node-api.ts) `host:port`, or undefined: no compute nodes. */
  nodeApiAddr: string | undefined;
  /** A compute node: the server's node API (http://host:port). */
  serverUrl: string | undefined;
  /** A compute node: its token for the server's node API (`gc node token NAME` on the server). */
  nodeToken: string | undefined;
  /** A compute node: where it listens for the server's job control (gcqdel, gcqsig, ...), `host:port`. */
  nodeControlAddr: string | undefined;
  /** Where the server exports snapshots to compute hosts over NBD (HOST:PORT), or undefined: no exports. */
  nbdAddr: string | undefined;
  /** This compute host's name in the node registry (src/grid/). */
  nodeName: string;
  /** How often a compute host renews its heartbeat and usage in Redis. */
  nodeHeartbeatMs: number;
  /** A host whose heartbeat is this old is marked down and its jobs end (rerun or fail). */
  nodeDeadMs: number;
  /** false: the server runs no jobs itself (only its nodes do). */
  serverRunsJobs: boolean;
  /** Where the embedded Redis also listens on TCP for nodes (HOST:PORT), or undefined: Unix socket only. */
  redisBind: string | undefined;
  /** Most a job waits for a host that already caches its snapshot before any host with room takes it. */
  placementDeferMs: number;
}

export interface SettingDecl<K extends keyof Settings> {
  name: `GC_${string}`;
  /** Value type as the README shows it. */
  type: string;
  /** The default as the README shows it. */
  defaultText: string;
  meaning: string;
  parse: SettingParser<Exclude<Settings[K], undefined>>;
  /** The value when the variable is unset or empty; some defaults follow the state folder. */
  fallback: (stateDir: string) => Settings[K];
}

const none = (): undefined => undefined;

/** One declaration per setting; the mapped type makes a setting without one a compile error. */
export const SETTING_DECLS: { readonly [K in keyof Settings]: SettingDecl<K> } = {
  stateDir: {
    name: 'GC_STATE_DIR',
    type: 'path',
    defaultText: '`/var/lib/copper`',
    parse: path,
    fallback: () => '/var/lib/copper',
    meaning: 'all durable state: Redis data, headnodes, snapshots, images, sockets',
  },
  ramDir: {
    name: 'GC_RAM_DIR',
    type: 'path',
    defaultText: '`/dev/shm/copper/...`',
    parse: path,
    fallback: (stateDir) => join('/dev/shm/copper', stateDir.replace(/[^A-Za-z0-9]+/g, '_')),
    meaning: 'guest RAM files (tmpfs)',
  },
  redisUrl: {
    name: 'GC_REDIS_URL',
    type: 'URL',
    defaultText: '(embedded)',
    parse: url('redis:', 'rediss:'),
    fallback: none,
    meaning: 'use this Redis instead of starting one (it must be `noeviction` with AOF)',
  },
  serverName: {
    name: 'GC_SERVER_NAME',
    type: 'name',
    defaultText: 'host name',
    parse: word(/^[A-Za-z0-9][A-Za-z0-9-]*$/, 'a host name (letters, digits, -)'),
    fallback: () => hostname().split('.')[0] || 'copper',
    meaning: 'the `<server>` part of job ids',
  },
  socketPath: {
    name: 'GC_SOCKET',
    type: 'path',
    defaultText: '`$GC_STATE_DIR/gcd.sock`',
    parse: path,
    fallback: (stateDir) => join(stateDir, 'gcd.sock'),
    meaning: "gcd's admin socket on the host (mode 0600)",
  },
  keyPrefix: {
    name: 'GC_KEY_PREFIX',
    type: 'name',
    defaultText: '`copper`',
    parse: word(/^[A-Za-z0-9_.-]+$/, 'a key prefix (letters, digits, _ . -)'),
    fallback: () => 'copper',
    meaning: 'prefix of every Redis key Copper owns (BullMQ keys included)',
  },
  configDir: {
    name: 'GC_CONFIG_DIR',
    type: 'path',
    defaultText: '`$GC_STATE_DIR/config`',
    parse: path,
    fallback: (stateDir) => join(stateDir, 'config'),
    meaning: 'admin config folder (`quotas.yaml`)',
  },
  logLevel: {
    name: 'GC_LOG_LEVEL',
    type: 'word',
    defaultText: '`info`',
    parse: choice('error', 'warn', 'info', 'debug'),
    fallback: () => 'info',
    meaning: "gcd's log level: `error`, `warn`, `info` or `debug`",
  },
  driver: {
    name: 'GC_DRIVER',
    type: 'word',
    defaultText: '`qemu`',
    parse: choice('qemu', 'fake'),
    fallback: () => 'qemu',
    meaning: '`fake`: the test double instead of QEMU (tests only)',
  },
  fakeHeadnodes: {
    name: 'GC_FAKE_HEADNODES',
    type: 'list',
    defaultText: '(none)',
    parse: text,
    fallback: none,
    meaning: 'with `GC_DRIVER=fake`: headnodes as `name:owner[:group],...` (tests only)',
  },
  testStartDelayMs: {
    name: 'GC_TEST_START_DELAY_MS',
    type: 'ms',
    defaultText: '0',
    parse: milliseconds(),
    fallback: () => 0,
    meaning: "tests only: gcd's start pauses this long after the guest channels open, before the scheduler recovers",
  },
  testCrashAt: {
    name: 'GC_TEST_CRASH_AT',
    type: 'text',
    defaultText: '(none)',
    parse: text,
    fallback: none,
    meaning: 'tests only: gcd kills itself (SIGKILL) when it reaches this named step (`submit:after-create`, `deliver:before-F`...; see src/crash-point.ts)',
  },
  killDelayMs: {
    name: 'GC_KILL_DELAY_MS',
    type: 'ms',
    defaultText: '10000',
    parse: milliseconds(),
    fallback: () => 10_000,
    meaning: 'SIGTERM to SIGKILL on walltime and gcqdel',
  },
  guestDeadlineMs: {
    name: 'GC_GUEST_DEADLINE_MS',
    type: 'ms',
    defaultText: '30000',
    parse: milliseconds(),
    fallback: () => 30_000,
    meaning: 'after SIGTERM and the kill delay, the time a guest has to end its job before gcd kills the clone VM',
  },
  maxOutputMiB: {
    name: 'GC_MAX_OUTPUT_MIB',
    type: 'MiB',
    defaultText: '4096',
    parse: wholeNumber(1),
    fallback: () => 4096,
    meaning: "most of a job's stdout (and of its stderr) brought home; the rest is cut and the job's comment says so",
  },
  redisMaxMemoryMiB: {
    name: 'GC_REDIS_MAXMEMORY_MIB',
    type: 'MiB',
    defaultText: '2048',
    parse: wholeNumber(1),
    fallback: () => 2048,
    meaning: 'maxmemory of the embedded Redis (noeviction); submissions are refused once it is 90% full, so running jobs can still end',
  },
  lockDurationMs: {
    name: 'GC_LOCK_MS',
    type: 'ms',
    defaultText: '30000',
    parse: milliseconds(1000),
    fallback: () => 30_000,
    meaning: 'queue lock of a running job: a job whose gcd stops renewing it for this long counts as stalled',
  },
  capacityNcpus: {
    name: 'GC_CAPACITY_NCPUS',
    type: 'count',
    defaultText: '4 x cores',
    parse: wholeNumber(1),
    fallback: () => cpus().length * 4,
    meaning: 'cpus that clones may use at once',
  },
  capacityMemMiB: {
    name: 'GC_CAPACITY_MEM_MIB',
    type: 'MiB',
    defaultText: '75% of RAM',
    parse: wholeNumber(1),
    fallback: () => Math.floor((totalmem() / 1048576) * 0.75),
    meaning: 'RAM that clones may use at once',
  },
  cloneConcurrency: {
    name: 'GC_CLONE_CONCURRENCY',
    type: 'count',
    defaultText: '4',
    parse: wholeNumber(1),
    fallback: () => 4,
    meaning: 'clones `gc clone N` starts at once',
  },
  maxClones: {
    name: 'GC_MAX_CLONES',
    type: 'count',
    defaultText: '8',
    parse: wholeNumber(0),
    fallback: () => 8,
    meaning: 'live `gc clone` clones per user where `quotas.yaml` sets no user limit',
  },
  accel: {
    name: 'GC_ACCEL',
    type: 'word',
    defaultText: 'detected',
    parse: choice('kvm', 'tcg'),
    fallback: none,
    meaning: '`kvm` or `tcg`',
  },
  snapshotRam: {
    name: 'GC_SNAPSHOT_RAM',
    type: 'word',
    defaultText: '`auto`',
    parse: choice('auto', 'copy'),
    fallback: () => 'auto',
    meaning: '`auto`: background snapshots where possible; `copy`: copy RAM inside the pause',
  },
  qemuBinary: {
    name: 'GC_QEMU',
    type: 'command',
    defaultText: '`qemu-system-x86_64`',
    parse: text,
    fallback: () => 'qemu-system-x86_64',
    meaning: 'the QEMU program',
  },
  imageDir: {
    name: 'GC_IMAGE_DIR',
    type: 'path',
    defaultText: '`$GC_STATE_DIR/images`',
    parse: path,
    fallback: none,
    meaning: 'headnode image cache, shareable by several state folders (tests, CI)',
  },
  imageRecipeDir: {
    name: 'GC_IMAGE_RECIPE_DIR',
    type: 'path',
    defaultText: "the checkout's `image/`",
    parse: path,
    fallback: none,
    meaning: 'the image recipe folder',
  },
  debianMirror: {
    name: 'GC_DEBIAN_MIRROR',
    type: 'URL',
    defaultText: "the host's",
    parse: url('http:', 'https:'),
    fallback: none,
    meaning: 'mirror for the image build',
  },
  imagePackages: {
    name: 'GC_IMAGE_PACKAGES',
    type: 'list',
    defaultText: '(none)',
    parse: debianPackages,
    fallback: () => [],
    meaning:
      'extra Debian packages in the headnode image, comma or space separated (`snakemake,r-base-core`); a new list is a new image (old headnodes keep theirs)',
  },
  stageoutMaxBytes: {
    name: 'GC_STAGEOUT_MAX',
    type: 'size',
    defaultText: '`4gb`',
    parse: byteSize,
    fallback: () => 4 * 1024 ** 3,
    meaning: 'per job, file content a stage-out writes into the headnode; the rest is kept on the host',
  },
  stageoutKeepMaxBytes: {
    name: 'GC_STAGEOUT_KEEP_MAX',
    type: 'size',
    defaultText: '`16gb`',
    parse: byteSize,
    fallback: () => 16 * 1024 ** 3,
    meaning: 'per job, most kept on the host beyond `GC_STAGEOUT_MAX`',
  },
  headnode: {
    name: 'GC_HEADNODE',
    type: 'name',
    defaultText: '(none)',
    parse: text,
    fallback: none,
    meaning: 'on the host: the headnode `gcqsub` and `gc clone` act for without `--headnode`',
  },
  smtpUrl: {
    name: 'GC_SMTP_URL',
    type: 'URL',
    defaultText: '(none)',
    parse: url('smtp:', 'smtps:'),
    fallback: none,
    meaning: 'job mail (`-m`/`-M`) through this SMTP relay (`smtp://host:25`, `smtps://user:pass@host:465`); without it, through `GC_SENDMAIL`',
  },
  sendmailPath: {
    name: 'GC_SENDMAIL',
    type: 'path',
    defaultText: '`/usr/sbin/sendmail`',
    parse: path,
    fallback: () => '/usr/sbin/sendmail',
    meaning: "the host MTA's sendmail program, called as `sendmail -i -f FROM -- RCPT...`",
  },
  mailFrom: {
    name: 'GC_MAIL_FROM',
    type: 'address',
    defaultText: '`copper@$GC_MAIL_DOMAIN`',
    parse: word(/^[^\s@<>,]+@[^\s@<>,]+$/, 'a mail address (user@domain)'),
    fallback: none,
    meaning: 'From: of job mail',
  },
  mailDomain: {
    name: 'GC_MAIL_DOMAIN',
    type: 'name',
    defaultText: '`GC_SERVER_NAME`',
    parse: word(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/, 'a domain name (letters, digits, . -)'),
    fallback: none,
    meaning: 'domain added to a bare `-M` name or job owner',
  },
  nbdAddr: {
    name: 'GC_NBD_ADDR',
    type: 'address',
    defaultText: '(off)',
    parse: word(/^(?:(?:\[[0-9a-fA-F:.]+\]|[^:\s[\]]+):\d{1,5}|off)$/, 'HOST:PORT (e.g. 10.0.0.1:10809) or off'),
    fallback: none,
    meaning: "the server's NBD exports of snapshots to compute hosts (qemu-storage-daemon, TLS-PSK per node)",
  },
  metricsAddr: {
    name: 'GC_METRICS_ADDR',
    type: 'address',
    defaultText: '(off)',
    parse: word(/^(?:(?:\[[0-9a-fA-F:.]+\]|[^:\s[\]]+):\d{1,5}|off)$/, 'HOST:PORT (e.g. 127.0.0.1:9464) or off'),
    fallback: none,
    meaning: 'where Prometheus scrapes `GET /metrics` (job counts, waits, run times, snapshot pauses)',
  },
  accountingDir: {
    name: 'GC_ACCOUNTING_DIR',
    type: 'path',
    defaultText: '`$GC_STATE_DIR/accounting`',
    parse: (t) => (t === 'off' ? 'off' : path(t, 'GC_ACCOUNTING_DIR')),
    fallback: (stateDir) => join(stateDir, 'accounting'),
    meaning: 'PBS accounting files (`YYYYMMDD`, read by `gctracejob`, `gcseff`); `off`: none',
  },
  webAddr: {
    name: 'GC_WEB_ADDR',
    type: 'host:port',
    defaultText: '(off)',
    parse: word(/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/, 'host:port (e.g. 127.0.0.1:8080)'),
    fallback: none,
    meaning: 'serve the web dashboard here (log-in: `gc web token`); off when unset',
  },
  webSampleSec: {
    name: 'GC_WEB_SAMPLE_SEC',
    type: 'seconds',
    defaultText: '`10`',
    parse: wholeNumber(1),
    fallback: () => 10,
    meaning: "seconds between the dashboard's queue-depth and utilisation samples",
  },
  guestAllow: {
    name: 'GC_GUEST_ALLOW',
    type: 'CIDRs',
    defaultText: '(none)',
    parse: text,
    fallback: () => '',
    meaning:
      'comma-separated addresses or CIDRs (IPv4/IPv6) guests may reach although they are the host, private or link-local (docs/security.md, guest egress)',
  },
  vmGid: {
    name: 'GC_VM_GID',
    type: 'gid',
    defaultText: '60513',
    parse: wholeNumber(1),
    fallback: () => 60513,
    meaning: "group id every QEMU runs with (no account needs it): the host firewall matches guests' traffic by it",
  },
  vmUidBase: {
    name: 'GC_VM_UID_BASE',
    type: 'uid',
    defaultText: '`1000000000`',
    parse: wholeNumber(1000),
    fallback: () => 1_000_000_000,
    meaning:
      'first uid of the range QEMUs run as: each headnode gets one of its own, its clones and snapshots share it (no account needs it; docs/security.md)',
  },
  vmUidCount: {
    name: 'GC_VM_UID_COUNT',
    type: 'count',
    defaultText: '`65536`',
    parse: wholeNumber(16),
    fallback: () => 65536,
    meaning: 'how many uids from GC_VM_UID_BASE headnodes take (the most headnodes one state folder can hold)',
  },
  vmPidsMax: {
    name: 'GC_VM_PIDS_MAX',
    type: 'count',
    defaultText: '512',
    parse: wholeNumber(16),
    fallback: () => 512,
    meaning: "pids.max of each VM's cgroup (QEMU's threads and the helpers it runs)",
  },
  vmMemOverheadMiB: {
    name: 'GC_VM_MEM_OVERHEAD_MIB',
    type: 'MiB',
    defaultText: '768',
    parse: wholeNumber(64),
    fallback: () => 768,
    meaning: "memory.max of each VM's cgroup is its largest RAM (maxmem), its TCG buffer and this",
  },
  sharedMaxSessions: {
    name: 'GC_SHARED_MAX_SESSIONS',
    type: 'count',
    // Every VM of a user (headnode, each array task's clone, each cluster clone) holds one
    // session: the cap must exceed the clones a user can run at once over every host, or an
    // array's later tasks fail to mount /shared. It bounds processes, about 3 MB each.
    defaultText: '256',
    parse: wholeNumber(1),
    fallback: () => 256,
    meaning: 'concurrent /shared (sftp) sessions per user over all their VMs (one per VM); more connections are closed at once',
  },
  sshAddr: {
    name: 'GC_SSH_ADDR',
    type: 'address',
    defaultText: '(off)',
    parse: word(
      /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/,
      'an IPv4 address of this host (e.g. 192.0.2.10; 0.0.0.0: all)',
    ),
    fallback: none,
    meaning: 'each headnode gets an SSH port on this address (`ssh -p PORT root@ADDR`, keys from `gc headnode create --ssh-key`); unset: none',
  },
  sshPorts: {
    name: 'GC_SSH_PORTS',
    type: 'range',
    defaultText: '`2200-2999`',
    parse: portRange,
    fallback: () => ({ first: 2200, last: 2999 }),
    meaning: "host ports headnodes' SSH ports are taken from (one per headnode, kept for its life)",
  },
  nodeApiAddr: {
    name: 'GC_NODE_API_ADDR',
    type: 'host:port',
    defaultText: '(off)',
    parse: word(/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/, 'host:port (e.g. 10.0.0.1:7070)'),
    fallback: none,
    meaning: "the server's node API for compute nodes (tokens: `gc node token NAME`); off when unset",
  },
  serverUrl: {
    name: 'GC_SERVER_URL',
    type: 'URL',
    defaultText: '(none)',
    parse: url('http:'),
    fallback: none,
    meaning: "a compute node (`gcd --node`): the server's node API, `http://host:port`",
  },
  nodeToken: {
    name: 'GC_NODE_TOKEN',
    type: 'token',
    defaultText: '(none)',
    parse: word(/^[A-Za-z0-9_-]{16,128}$/, 'a node token (from `gc node token NAME`)'),
    fallback: none,
    meaning: "a compute node: its token for the server's node API and its Redis user `node-NAME` (`gc node token NAME` on the server)",
  },
  nodeControlAddr: {
    name: 'GC_NODE_CONTROL_ADDR',
    type: 'host:port',
    defaultText: '(none)',
    parse: word(/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/, 'host:port (e.g. 10.0.0.2:7071)'),
    fallback: none,
    meaning: "a compute node: where it takes the server's job control (gcqdel, gcqsig, gcqpeek, gcqexec, gcqrerun)",
  },
  nodeName: {
    name: 'GC_NODE_NAME',
    type: 'name',
    defaultText: 'host name',
    parse: word(/^[A-Za-z0-9][A-Za-z0-9-]*$/, 'a host name (letters, digits, -)'),
    fallback: () => hostname().split('.')[0] || 'copper',
    meaning: "this compute host's name in `gc nodes` and in jobs' `exec_host`",
  },
  nodeHeartbeatMs: {
    name: 'GC_NODE_HEARTBEAT_MS',
    type: 'ms',
    defaultText: '2000',
    parse: milliseconds(100),
    fallback: () => 2000,
    meaning: 'how often a compute host (the server included) renews its heartbeat and usage in Redis',
  },
  nodeDeadMs: {
    name: 'GC_NODE_DEAD_MS',
    type: 'ms',
    defaultText: '15000',
    parse: milliseconds(300),
    fallback: () => 15_000,
    meaning: 'a host silent this long is marked down; its running jobs rerun elsewhere (`-r y`) or fail (`-r n`)',
  },
  serverRunsJobs: {
    name: 'GC_SERVER_RUNS_JOBS',
    type: 'word',
    defaultText: '`1`',
    parse: (t, v) => choice('0', '1')(t, v) === '1',
    fallback: () => true,
    meaning: '`0`: the server runs no jobs itself, only its nodes (`gcd --node`) do',
  },
  redisBind: {
    name: 'GC_REDIS_BIND',
    type: 'HOST:PORT',
    defaultText: '(Unix socket only)',
    parse: word(/^[0-9A-Za-z.-]+:\d{1,5}$/, 'HOST:PORT (e.g. 10.254.0.1:6380)'),
    fallback: none,
    meaning:
      'the embedded Redis also listens here so that nodes can reach it, each as its own ACL user (`gc node token NAME`); never set it to an address guests can reach',
  },
  placementDeferMs: {
    name: 'GC_PLACEMENT_DEFER_MS',
    type: 'ms',
    defaultText: '3000',
    parse: milliseconds(),
    fallback: () => 3000,
    meaning: 'most a job waits for an up host that already caches its snapshot (0: no preference)',
  },
};

/** `FIRST-LAST`: TCP ports from 1024 (not a privileged port) to 65535. */
function portRange(t: string, variable: string): { first: number; last: number } {
  const m = /^(\d{4,5})-(\d{4,5})$/.exec(t);
  const first = m ? Number(m[1]) : NaN;
  const last = m ? Number(m[2]) : NaN;
  if (!(first >= 1024 && last <= 65535 && first <= last)) throw new SettingError(variable, t, 'must be FIRST-LAST, ports from 1024 to 65535');
  return { first, last };
}

function read<K extends keyof Settings>(key: K, env: NodeJS.ProcessEnv, stateDir: string): Settings[K] {
  const d: SettingDecl<K> = SETTING_DECLS[key];
  const raw = env[d.name];
  return raw === undefined || raw === '' ? d.fallback(stateDir) : d.parse(raw, d.name);
}

/** Parses and checks every `GC_*` variable of `env`; the first bad one throws a SettingError. */
export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const stateDir = read('stateDir', env, '');
  const r = <K extends keyof Settings>(key: K): Settings[K] => read(key, env, stateDir);
  return {
    stateDir,
    ramDir: r('ramDir'),
    redisUrl: r('redisUrl'),
    serverName: r('serverName'),
    socketPath: r('socketPath'),
    keyPrefix: r('keyPrefix'),
    configDir: r('configDir'),
    logLevel: r('logLevel'),
    driver: r('driver'),
    fakeHeadnodes: r('fakeHeadnodes'),
    testStartDelayMs: r('testStartDelayMs'),
    testCrashAt: r('testCrashAt'),
    killDelayMs: r('killDelayMs'),
    guestDeadlineMs: r('guestDeadlineMs'),
    maxOutputMiB: r('maxOutputMiB'),
    redisMaxMemoryMiB: r('redisMaxMemoryMiB'),
    lockDurationMs: r('lockDurationMs'),
    capacityNcpus: r('capacityNcpus'),
    capacityMemMiB: r('capacityMemMiB'),
    cloneConcurrency: r('cloneConcurrency'),
    maxClones: r('maxClones'),
    accel: r('accel'),
    snapshotRam: r('snapshotRam'),
    qemuBinary: r('qemuBinary'),
    imageDir: r('imageDir'),
    imageRecipeDir: r('imageRecipeDir'),
    debianMirror: r('debianMirror'),
    imagePackages: r('imagePackages'),
    stageoutMaxBytes: r('stageoutMaxBytes'),
    stageoutKeepMaxBytes: r('stageoutKeepMaxBytes'),
    headnode: r('headnode'),
    smtpUrl: r('smtpUrl'),
    sendmailPath: r('sendmailPath'),
    mailFrom: r('mailFrom'),
    mailDomain: r('mailDomain'),
    metricsAddr: r('metricsAddr'),
    accountingDir: r('accountingDir'),
    webAddr: r('webAddr'),
    nodeApiAddr: r('nodeApiAddr'),
    serverUrl: r('serverUrl'),
    nodeToken: r('nodeToken'),
    nodeControlAddr: r('nodeControlAddr'),
    webSampleSec: r('webSampleSec'),
    guestAllow: r('guestAllow'),
    vmGid: r('vmGid'),
    vmUidBase: r('vmUidBase'),
    vmUidCount: r('vmUidCount'),
    vmPidsMax: r('vmPidsMax'),
    vmMemOverheadMiB: r('vmMemOverheadMiB'),
    sharedMaxSessions: r('sharedMaxSessions'),
    sshAddr: r('sshAddr'),
    sshPorts: r('sshPorts'),
    nbdAddr: r('nbdAddr'),
    nodeName: r('nodeName'),
    nodeHeartbeatMs: r('nodeHeartbeatMs'),
    nodeDeadMs: r('nodeDeadMs'),
    serverRunsJobs: r('serverRunsJobs'),
    redisBind: r('redisBind'),
    placementDeferMs: r('placementDeferMs'),
  };
}

/**
 * One setting alone, for a module-level constant: importing a module must not throw because
 * another variable is bad (the tool or gcd reports that one in one line at start).
 */
export function setting<K extends keyof Settings>(key: K, env: NodeJS.ProcessEnv = process.env): Settings[K] {
  return read(key, env, read('stateDir', env, ''));
}

const parsed = new WeakMap<NodeJS.ProcessEnv, Settings>();

/**
 * The settings of `env` (default: this process's environment), parsed once per environment
 * object: call sites read `settings().killDelayMs`, never process.env themselves.
 */
export function settings(env: NodeJS.ProcessEnv = process.env): Settings {
  let s = parsed.get(env);
  if (s === undefined) {
    s = loadSettings(env);
    parsed.set(env, s);
  }
  return s;
}

/** The message of a bad setting, for a caller that must not throw (the logger at import). */
export function settingProblem(env: NodeJS.ProcessEnv = process.env): SettingError | undefined {
  try {
    settings(env);
    return undefined;
  } catch (e) {
    if (e instanceof SettingError) return e;
    throw e;
  }
}
