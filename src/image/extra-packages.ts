import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DriverError, errorMessage } from '../errors.js';
import { run } from './host-tools.js';

/**
 * GC_IMAGE_PACKAGES into the debootstrapped tree, with apt in a chroot on the host.
 *
 * Why not debootstrap's --include: it resolves dependencies by itself, without alternatives,
 * virtual packages or apt's ordering, and it fails on real stacks (snakemake's Python
 * dependencies stop at python3-bcrypt). Why not apt inside a guest: under TCG it takes many
 * minutes. Here apt runs natively against the tree, without Recommends (what the admin names is
 * what comes, with its Depends), services are kept from starting, and apt's lists and downloaded
 * .debs are removed so they do not weigh on every headnode's base.
 */
export async function installExtraPackages(tree: string, packages: readonly string[]): Promise<void> {
  if (packages.length === 0) return;
  const policy = join(tree, 'usr', 'sbin', 'policy-rc.d');
  // 101: "action not allowed": package scripts never start a daemon in the build tree.
  await writeFile(policy, '#!/bin/sh\nexit 101\n');
  await chmod(policy, 0o755);
  const env = { DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C.UTF-8', APT_LISTCHANGES_FRONTEND: 'none' };
  const apt = (...args: string[]) => run('chroot', [tree, 'apt-get', '-q', '-y', ...args], env);
  try {
    await apt('update');
    await apt('install', '--no-install-recommends', ...packages);
  } catch (err) {
    throw new DriverError(`GC_IMAGE_PACKAGES=${packages.join(',')}: apt-get in the image tree failed: ${errorMessage(err)}`, { cause: err });
  } finally {
    await apt('clean').catch(() => '');
    await rm(policy, { force: true });
    const lists = join(tree, 'var', 'lib', 'apt', 'lists');
    await rm(lists, { recursive: true, force: true });
    await mkdir(join(lists, 'partial'), { recursive: true });
  }
}
