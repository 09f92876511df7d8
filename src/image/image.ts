import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, lstat, mkdir, open, readdir, readFile, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { settings } from '../config/settings.js';
import { DriverError, UsageError, errorMessage } from '../errors.js';
import { GUEST_CLONE_INIT, GUEST_INIT, GUEST_RUN_JOB } from '../vm/guest-programs.js';
import { duBytes, hostMirror, newestKernel, requireTool, run, secs } from './host-tools.js';
import { extractPvhKernel, hasPvhNote } from './pvh-kernel.js';
import { installExtraPackages } from './extra-packages.js';
import { buildInitramfs, configureTree, copyTree, installModules, SUITE, type Plan } from './guest-tree.js';

/**
 * The default headnode image: Debian bookworm minbase + the guest agent + python3 + Copper's
 * guest files, booted with the host's Debian kernel and a small initramfs of our own.
 *
 * Why our own initramfs: the host's Debian initrd (MODULES=most, 30 MB zstd) takes about 6 s
 * to unpack under TCG and does not fit in a 256 MiB guest; ours is static busybox + the ~20
 * modules the guest needs, loaded there because every exec of a dynamically linked tool costs
 * 0.1-0.3 s under TCG. Why an uncompressed PVH kernel: it skips the in-guest xz decompression.
 * Together: guest agent answering ~9 s after QEMU starts instead of ~35 s.
 *
 * Cached in <stateDir>/images/debian-bookworm-<recipeHash>/; the hash covers the recipe
 * version, the package list, every file under image/ and the kernel, so an unchanged recipe is
 * never rebuilt. A build happens in a temporary folder that is renamed into place at the end.
 */

/** The PID 1 copper-init; run-job and clone-init live next to the guest CLI (vm/guest-programs.ts). */
export { GUEST_CLONE_INIT, GUEST_INIT, GUEST_RUN_JOB };
export { hasPvhNote, SUITE };
/** Bump when the build steps change in a way the hashed inputs do not show. */
export const RECIPE_VERSION = 3;
export const PACKAGES = [
  'qemu-guest-agent',
  'python3',
  'iproute2',
  'kmod',
  'procps',
  'netbase',
  'ca-certificates',
  'less',
  // The shared volume (/shared): SFTP straight over TCP (-o directport), no ssh client run.
  'sshfs',
  // Logins by SSH (README "SSH into your headnode"); host keys are made per headnode at its
  // first boot (copper-init), never in the image.
  'openssh-server',
] as const;
export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';
export const DEFAULT_SIZE_MIB = 4096;

export interface ImageSizes {
  /** Bytes the qcow2 base takes on the host. */
  diskBytes: number;
  /** Size of the guest's root filesystem (the qcow2's virtual size). */
  fsBytes: number;
  /** Bytes of the unpacked tree that went into the filesystem. */
  treeBytes: number;
  kernelBytes: number;
  initrdBytes: number;
}

export interface ImageInfo {
  dir: string;
  /** qcow2 base; headnode disks are overlays on it, so it must never change. */
  disk: string;
  /** The kernel to pass to -kernel: the uncompressed PVH ELF when the host kernel has one, else bzImage. */
  kernel: string;
  /** The host's compressed kernel as installed (bzImage). */
  bzImage: string;
  initrd: string;
  kernelVersion: string;
  recipeHash: string;
  mirror: string;
  /** GC_IMAGE_PACKAGES when it was built (absent in images built before the setting). */
  extraPackages?: readonly string[];
  builtAt: number;
  buildSeconds: number;
  sizes: ImageSizes;
}

export interface ImageOptions {
  stateDir: string;
  /** Rebuild even when the cached image is current. */
  force?: boolean;
  /** Debian mirror; default GC_DEBIAN_MIRROR, else the host's apt source, else deb.debian.org. */
  mirror?: string;
  /** Host kernel to boot, e.g. 6.1.0-56-amd64; default the newest one with modules installed. */
  kernelVersion?: string;
  sizeMiB?: number;
  /** Debian packages beyond PACKAGES; default GC_IMAGE_PACKAGES. */
  extraPackages?: readonly string[];
  /** Progress lines; default stderr. */
  log?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

export interface CmdlineOptions {
  hostname: string;
  /** Guest path where the 9p share tagged "copper" is mounted. */
  share?: string;
  /** Mount the owner's shared volume (sshfs to 10.0.2.101:22, vm-args.ts sharedSftp) at /shared. */
  sftp?: boolean;
  debug?: boolean;
}

/** The kernel command line copper-init expects. */
export function guestKernelCmdline(opts: CmdlineOptions): string {
  if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})$/.test(opts.hostname)) {
    throw new UsageError(`invalid guest hostname '${opts.hostname}'`);
  }
  const parts = [
    'root=/dev/vda',
    'rw',
    `init=${GUEST_INIT}`,
    'console=ttyS0',
    // Boot speed under TCG: no keyboard/mouse controller probing, no CPU bug mitigations
    // (the guest is one user's own machine), fewer legacy UARTs.
    'quiet',
    'i8042.noaux',
    'i8042.nokbd',
    '8250.nr_uarts=1',
    'mitigations=off',
    'random.trust_cpu=on',
    // Keep the SMP code paths even while one vCPU is online: otherwise every clone given more
    // vCPUs (-l ncpus, hot-plugged) re-patches the kernel first, 0.45-0.85 s under TCG.
    'noreplace-smp',
    `copper.hostname=${opts.hostname}`,
  ];
  if (opts.share !== undefined) {
    if (!/^\/[A-Za-z0-9_./+-]*$/.test(opts.share)) throw new UsageError(`invalid share path '${opts.share}'`);
    parts.push(`copper.share=${opts.share}`);
  }
  if (opts.sftp === true) parts.push('copper.sftp=1');
  if (opts.debug === true) parts.push('copper.debug=1');
  return parts.join(' ');
}

/** Images are cached per state folder, or in GC_IMAGE_DIR when several state folders share one cache (tests, CI). */
export function imagesDir(stateDir: string, env: NodeJS.ProcessEnv = process.env): string {
  return settings(env).imageDir ?? join(stateDir, 'images');
}

/** The image for the current recipe if it is built, without building it. */
export async function findImage(opts: ImageOptions): Promise<ImageInfo | undefined> {
  const plan = await planImage(opts);
  return readImageInfo(plan.finalDir);
}

/** The folder the current recipe's image has (or will have) in the cache; builds nothing. */
export async function imageFolder(opts: ImageOptions): Promise<string> {
  return (await planImage(opts)).finalDir;
}

/** The image for the current recipe, built first if needed (or if `force`). */
export async function buildImage(opts: ImageOptions): Promise<ImageInfo> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`image: ${line}\n`));
  const plan = await planImage(opts);
  await mkdir(plan.imagesDir, { recursive: true });
  const release = await lockBuild(plan, log);
  try {
    const cached = await readImageInfo(plan.finalDir);
    if (cached !== undefined && opts.force !== true) {
      log(`up to date: ${plan.finalDir}`);
      return cached;
    }
    if (cached !== undefined) {
      log(`--force: rebuilding ${plan.finalDir}; headnode disks made on the old base will no longer match it`);
    }
    await removeStaleBuilds(plan.imagesDir);
    return await runBuild(plan, log);
  } finally {
    await release();
  }
}

async function planImage(opts: ImageOptions): Promise<Plan> {
  const env = opts.env ?? process.env;
  const recipeDir = findRecipeDir(env);
  const kernelVersion = opts.kernelVersion ?? (await newestKernel());
  const kernelPath = `/boot/vmlinuz-${kernelVersion}`;
  const modulesDir = `/lib/modules/${kernelVersion}`;
  if (!existsSync(kernelPath) || !existsSync(modulesDir)) {
    throw new DriverError(`kernel ${kernelVersion}: need ${kernelPath} and ${modulesDir} (apt-get install linux-image-amd64)`);
  }
  const sizeMiB = opts.sizeMiB ?? DEFAULT_SIZE_MIB;
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1024) throw new UsageError(`image size ${sizeMiB} MiB: must be an integer >= 1024`);
  const mirror = opts.mirror ?? settings(env).debianMirror ?? ((await hostMirror(SUITE)) || DEFAULT_MIRROR);
  const extraPackages = opts.extraPackages ?? settings(env).imagePackages;
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ RECIPE_VERSION, SUITE, PACKAGES, sizeMiB, kernelVersion }));
  // Only when set, so that images built without extra packages keep their hash (and cache).
  if (extraPackages.length > 0) hash.update(JSON.stringify({ extraPackages }));
  hash.update(await readFile(kernelPath));
  hash.update(await readFile('/usr/bin/busybox').catch(() => Buffer.from('no busybox')));
  await hashTree(hash, recipeDir, '');
  const recipeHash = hash.digest('hex').slice(0, 16);
  const imagesDirPath = imagesDir(resolve(opts.stateDir), env);
  return {
    imagesDir: imagesDirPath,
    finalDir: join(imagesDirPath, `debian-${SUITE}-${recipeHash}`),
    recipeDir,
    mirror,
    kernelVersion,
    kernelPath,
    modulesDir,
    sizeMiB,
    extraPackages,
    recipeHash,
  };
}

/** The image/ folder of this checkout (dist/src/image -> repo root), or GC_IMAGE_RECIPE_DIR. */
function findRecipeDir(env: NodeJS.ProcessEnv): string {
  const configured = settings(env).imageRecipeDir;
  if (configured !== undefined) return configured;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'image', 'guest', 'sbin', 'copper-init'))) return join(dir, 'image');
    dir = dirname(dir);
  }
  throw new DriverError('cannot find the image recipe folder (image/guest); set GC_IMAGE_RECIPE_DIR');
}

/** Hash paths, modes, symlink targets and contents, in a stable order. */
async function hashTree(hash: ReturnType<typeof createHash>, root: string, rel: string): Promise<void> {
  const entries = (await readdir(join(root, rel), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const e of entries) {
    const p = rel === '' ? e.name : `${rel}/${e.name}`;
    const full = join(root, p);
    const st = await lstat(full);
    if (st.isSymbolicLink()) hash.update(`L ${p} ${await readlink(full)}\n`);
    else if (st.isDirectory()) {
      hash.update(`D ${p}\n`);
      await hashTree(hash, root, p);
    } else {
      hash.update(`F ${p} ${st.mode & 0o777}\n`);
      hash.update(await readFile(full));
    }
  }
}

async function readImageInfo(dir: string): Promise<ImageInfo | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, 'image.json'), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const info = JSON.parse(text) as ImageInfo;
    // Paths are stored relative so the state folder can move.
    const kernel = existsSync(join(dir, 'vmlinux')) ? 'vmlinux' : 'vmlinuz';
    return {
      ...info,
      dir,
      disk: join(dir, 'disk.qcow2'),
      kernel: join(dir, kernel),
      bzImage: join(dir, 'vmlinuz'),
      initrd: join(dir, 'initrd.img'),
    };
  } catch (err) {
    throw new DriverError(`${dir}/image.json is corrupt; delete ${dir} and build again`, { cause: err });
  }
}

/** One build per recipe at a time; a lock left by a dead process is taken over. */
async function lockBuild(plan: Plan, log: (l: string) => void): Promise<() => Promise<void>> {
  const lockPath = join(plan.imagesDir, `.lock-${plan.recipeHash}`);
  let said = false;
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => rm(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new DriverError(`cannot create ${lockPath}: ${errorMessage(err)}`);
    }
    const holder = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
    if (!Number.isInteger(holder) || !pidAlive(holder)) {
      await rm(lockPath, { force: true });
      continue;
    }
    if (!said) log(`waiting for the build of process ${holder} to finish`);
    said = true;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Delete half-made builds whose builder process is gone. */
async function removeStaleBuilds(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const m = /^\.build-[0-9a-f]+-(\d+)$/.exec(name) ?? /^\.old-.*$/.exec(name);
    if (m === null) continue;
    if (m[1] !== undefined && pidAlive(Number(m[1]))) continue;
    await rm(join(dir, name), { recursive: true, force: true });
  }
}

async function runBuild(plan: Plan, log: (l: string) => void): Promise<ImageInfo> {
  for (const tool of ['debootstrap', 'mkfs.ext4', 'qemu-img', 'depmod']) await requireTool(tool);
  if (!existsSync('/usr/bin/busybox') && !existsSync('/bin/busybox')) {
    throw new DriverError('busybox is missing: apt-get install busybox-static');
  }
  const started = Date.now();
  const tmp = join(plan.imagesDir, `.build-${plan.recipeHash}-${process.pid}`);
  const tree = join(tmp, 'tree');
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  let done = false;
  try {
    const extra = plan.extraPackages.length > 0 ? `, extra packages ${plan.extraPackages.join(' ')}` : '';
    log(`building debian-${SUITE}-${plan.recipeHash} (kernel ${plan.kernelVersion}, mirror ${plan.mirror}${extra})`);
    const cacheDir = join(plan.imagesDir, 'deb-cache');
    await mkdir(cacheDir, { recursive: true });
    let t = Date.now();
    log('debootstrap (about a minute)...');
    try {
      await run('debootstrap', ['--variant=minbase', `--include=${PACKAGES.join(',')}`, `--cache-dir=${cacheDir}`, SUITE, tree, plan.mirror]);
    } catch (err) {
      // debootstrap says "see debootstrap.log" and that log is inside the tree we delete.
      const detail = await readFile(join(tree, 'debootstrap', 'debootstrap.log'), 'utf8').catch(() => '');
      const tail = detail.trim().split('\n').slice(-15).join('\n');
      throw new DriverError(`${errorMessage(err)}${tail ? `\ndebootstrap.log:\n${tail}` : ''}`, { cause: err });
    }
    log(`debootstrap done in ${secs(t)}`);
    if (plan.extraPackages.length > 0) {
      t = Date.now();
      log(`apt-get install ${plan.extraPackages.join(' ')} (GC_IMAGE_PACKAGES)...`);
      await installExtraPackages(tree, plan.extraPackages);
      log(`extra packages installed in ${secs(t)}`);
    }

    t = Date.now();
    await copyTree(join(plan.recipeDir, 'guest'), tree);
    const modules = await installModules(plan, tree);
    await configureTree(plan, tree, modules);
    log(`guest files, ${modules.length} kernel modules and configuration added in ${secs(t)}`);

    t = Date.now();
    const initrd = join(tmp, 'initrd.img');
    await buildInitramfs(plan, tmp, modules, initrd);
    await copyFile(plan.kernelPath, join(tmp, 'vmlinuz'));
    const pvh = await extractPvhKernel(plan.kernelPath, join(tmp, 'vmlinux'));
    if (pvh !== true) log(`booting the compressed kernel: ${pvh}`);
    log(`initramfs${pvh === true ? ' and uncompressed PVH kernel' : ''} made in ${secs(t)}`);

    t = Date.now();
    const treeBytes = await duBytes(tree);
    const raw = join(tmp, 'root.ext4');
    // Inode tables and journal are initialised now: lazy init would make every headnode's
    // kernel write them into its own overlay.
    await run('mkfs.ext4', ['-q', '-F', '-L', 'copper-root', '-d', tree, '-E', 'lazy_itable_init=0,lazy_journal_init=0', raw, `${plan.sizeMiB}M`]);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, join(tmp, 'disk.qcow2')]);
    await rm(raw);
    await rm(tree, { recursive: true, force: true });
    log(`filesystem ${plan.sizeMiB} MiB from a ${(treeBytes / 2 ** 20).toFixed(0)} MiB tree, qcow2 made in ${secs(t)}`);

    const info: ImageInfo = {
      dir: plan.finalDir,
      disk: join(plan.finalDir, 'disk.qcow2'),
      kernel: join(plan.finalDir, pvh === true ? 'vmlinux' : 'vmlinuz'),
      bzImage: join(plan.finalDir, 'vmlinuz'),
      initrd: join(plan.finalDir, 'initrd.img'),
      kernelVersion: plan.kernelVersion,
      recipeHash: plan.recipeHash,
      mirror: plan.mirror,
      extraPackages: plan.extraPackages,
      builtAt: Date.now(),
      buildSeconds: Math.round((Date.now() - started) / 100) / 10,
      sizes: {
        diskBytes: (await stat(join(tmp, 'disk.qcow2'))).blocks * 512,
        fsBytes: plan.sizeMiB * 2 ** 20,
        treeBytes,
        kernelBytes: (await stat(join(tmp, pvh === true ? 'vmlinux' : 'vmlinuz'))).size,
        initrdBytes: (await stat(initrd)).size,
      },
    };
    await writeFile(join(tmp, 'image.json'), JSON.stringify(info, null, 2) + '\n');
    await publish(tmp, plan.finalDir);
    done = true;
    log(`ready in ${secs(started)}: ${plan.finalDir} (qcow2 ${(info.sizes.diskBytes / 2 ** 20).toFixed(0)} MiB)`);
    return info;
  } finally {
    if (!done) await rm(tmp, { recursive: true, force: true });
  }
}

/** rename() is atomic; an existing image (a --force rebuild) is moved aside first, then deleted. */
async function publish(tmp: string, finalDir: string): Promise<void> {
  if (existsSync(finalDir)) {
    const old = join(dirname(finalDir), `.old-${Date.now()}`);
    await rename(finalDir, old);
    await rename(tmp, finalDir);
    await rm(old, { recursive: true, force: true });
  } else {
    await rename(tmp, finalDir);
  }
}
