/** The guest's file tree and initramfs: modules, configuration, the Copper programs. */
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DriverError } from '../errors.js';
import { GUEST_CLONE_INIT, GUEST_INIT, GUEST_RUN_JOB, GUEST_SSH_KEYS } from '../vm/guest-programs.js';
import { run } from './host-tools.js';
import { BOOT_MODULES, GUEST_MODULES, loadKernelModules, moduleName, resolveModules } from './image-modules.js';

/** What one build makes, from where. */
export interface Plan {
  imagesDir: string;
  finalDir: string;
  recipeDir: string;
  mirror: string;
  kernelVersion: string;
  kernelPath: string;
  modulesDir: string;
  sizeMiB: number;
  /** GC_IMAGE_PACKAGES: Debian packages installed beyond the built-in PACKAGES. */
  extraPackages: readonly string[];
  recipeHash: string;
}

/** The suite the image is built from. */
export const SUITE = 'bookworm';

/** Copy files, folders and symlinks; folders that are symlinks in the tree (merged /usr) are followed. */
export async function copyTree(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const e of await readdir(from, { withFileTypes: true })) {
    const src = join(from, e.name);
    const dst = join(to, e.name);
    if (e.isDirectory()) await copyTree(src, dst);
    else if (e.isSymbolicLink()) {
      await rm(dst, { force: true });
      await symlink(await readlink(src), dst);
    } else {
      await copyFile(src, dst);
      await chmod(dst, (await stat(src)).mode & 0o7777);
    }
  }
}

/** Copy the guest's modules into the tree; returns their paths in load order. */
export async function installModules(plan: Plan, tree: string): Promise<string[]> {
  const { deps, builtin } = await loadKernelModules(plan.modulesDir);
  const guest = resolveModules(deps, [...BOOT_MODULES, ...GUEST_MODULES], builtin);
  const dest = join(tree, 'lib', 'modules', plan.kernelVersion);
  for (const rel of guest) {
    await mkdir(dirname(join(dest, rel)), { recursive: true });
    await copyFile(join(plan.modulesDir, rel), join(dest, rel));
  }
  for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
    if (existsSync(join(plan.modulesDir, f))) await copyFile(join(plan.modulesDir, f), join(dest, f));
  }
  // So that modprobe works in the headnode for the modules that are there.
  await run('depmod', ['-b', tree, plan.kernelVersion]);
  return guest;
}

export async function configureTree(plan: Plan, tree: string, modules: string[]): Promise<void> {
  const etc = join(tree, 'etc');
  await mkdir(join(etc, 'copper'), { recursive: true });
  await writeFile(join(etc, 'copper', 'modules.order'), modulesOrder(modules));
  await writeFile(join(etc, 'copper', 'image'), `recipe=${plan.recipeHash}\nkernel=${plan.kernelVersion}\nsuite=${SUITE}\n`);
  await writeFile(join(etc, 'hostname'), 'copper\n');
  await writeFile(join(etc, 'hosts'), '127.0.0.1\tlocalhost\n127.0.1.1\tcopper\n::1\tlocalhost ip6-localhost ip6-loopback\n');
  await writeFile(join(etc, 'resolv.conf'), 'nameserver 10.0.2.3\n');
  // copper-init mounts everything but / with a single `mount -a`.
  await writeFile(
    join(etc, 'fstab'),
    [
      '/dev/vda / ext4 rw,relatime 0 1',
      'devpts /dev/pts devpts gid=5,mode=620,ptmxmode=666,X-mount.mkdir 0 0',
      'tmpfs /dev/shm tmpfs mode=1777,nosuid,nodev,X-mount.mkdir 0 0',
      'tmpfs /run tmpfs mode=755,nosuid,nodev 0 0',
      'tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0',
    ].join('\n') + '\n',
  );
  // Empty: each clone gets its own id from clone-init; a headnode from its first boot.
  await writeFile(join(etc, 'machine-id'), '');
  const security = 'http://deb.debian.org/debian-security';
  await writeFile(
    join(etc, 'apt', 'sources.list'),
    `deb ${plan.mirror} ${SUITE} main\ndeb ${plan.mirror} ${SUITE}-updates main\ndeb ${security} ${SUITE}-security main\n`,
  );
  await rm(join(tree, 'var', 'cache', 'apt', 'archives'), { recursive: true, force: true });
  await mkdir(join(tree, 'var', 'cache', 'apt', 'archives', 'partial'), { recursive: true });
  await rm(join(tree, 'var', 'lib', 'apt', 'lists'), { recursive: true, force: true });
  await mkdir(join(tree, 'var', 'lib', 'apt', 'lists', 'partial'), { recursive: true });
  // SSH host keys are per headnode (copper-init makes them on the first boot): the ones the
  // openssh-server package made in the build tree would be every headnode's.
  for (const f of await readdir(join(etc, 'ssh'))) {
    if (f.startsWith('ssh_host_')) await rm(join(etc, 'ssh', f), { force: true });
  }
  await mkdir(join(etc, 'copper', 'ssh'), { recursive: true, mode: 0o755 });
  await chmod(join(etc, 'copper', 'ssh'), 0o755);
  await chmod(join(etc, 'copper'), 0o755);
  for (const p of [GUEST_INIT, GUEST_RUN_JOB, GUEST_CLONE_INIT, GUEST_SSH_KEYS, '/usr/sbin/sshd', '/usr/local/lib/copper/copper_cli.py']) {
    if (!existsSync(join(tree, p))) throw new DriverError(`image recipe lacks ${p}`);
  }
}

export async function buildInitramfs(plan: Plan, tmp: string, modules: string[], out: string): Promise<void> {
  const root = join(tmp, 'initramfs');
  await mkdir(join(root, 'bin'), { recursive: true });
  await copyFile(existsSync('/usr/bin/busybox') ? '/usr/bin/busybox' : '/bin/busybox', join(root, 'bin', 'busybox'));
  await chmod(join(root, 'bin', 'busybox'), 0o755);
  await copyFile(join(plan.recipeDir, 'initrd', 'init'), join(root, 'init'));
  await chmod(join(root, 'init'), 0o755);
  for (const rel of modules) {
    await mkdir(dirname(join(root, 'lib', 'modules', rel)), { recursive: true });
    await copyFile(join(plan.modulesDir, rel), join(root, 'lib', 'modules', rel));
  }
  await writeFile(join(root, 'modules.order'), modulesOrder(modules));
  // Uncompressed: unpacking is what costs time under TCG, a few MB of cpio is nothing.
  await run('sh', ['-c', 'cd "$1" && find . | LC_ALL=C sort | busybox cpio -o -H newc > "$2"', 'sh', root, out], {
    PATH: `/usr/bin:/bin:/usr/sbin:/sbin`,
  });
  await rm(root, { recursive: true, force: true });
}

/** "name path" lines in load order, for the shell loops of the initramfs and copper-init. */
function modulesOrder(paths: string[]): string {
  return paths.map((p) => `${moduleName(p)} ${p}`).join('\n') + '\n';
}
