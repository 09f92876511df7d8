import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DriverError } from '../errors.js';

/**
 * Kernel modules the guest needs from the host's Debian kernel, resolved through modules.dep
 * (Debian builds virtio, ext4 and 9p as modules and minbase has no modprobe at boot time).
 */

/** Needed to mount the root disk: loaded by the initramfs. */
export const BOOT_MODULES = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4'] as const;
/** Loaded by copper-init: network, guest agent port, entropy, the 9p shared folder, FUSE (sshfs /shared). */
export const GUEST_MODULES = ['virtio_net', 'virtio_console', 'virtio-rng', '9pnet_virtio', '9p', 'fuse'] as const;

/** Parsed modules.dep: module path (relative to /lib/modules/<ver>) -> its direct dependencies. */
export type ModuleDeps = Map<string, string[]>;

export function parseModulesDep(text: string): ModuleDeps {
  const deps: ModuleDeps = new Map();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const mod = line.slice(0, colon).trim();
    const rest = line.slice(colon + 1).trim();
    deps.set(mod, rest === '' ? [] : rest.split(/\s+/));
  }
  return deps;
}

/** Module name as the kernel knows it: basename without .ko/.ko.xz/.ko.zst, '-' as '_'. */
export function moduleName(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1).replace(/\.ko(\.(xz|zst|gz))?$/, '');
  return base.replace(/-/g, '_');
}

/**
 * Module paths for `names` and everything they depend on, dependencies first (the order
 * insmod needs). Names that are built into the kernel (listed in `builtin`) are skipped.
 */
export function resolveModules(deps: ModuleDeps, names: readonly string[], builtin: ReadonlySet<string> = new Set()): string[] {
  const byName = new Map<string, string>();
  for (const path of deps.keys()) byName.set(moduleName(path), path);
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (path: string): void => {
    const s = state.get(path);
    if (s === 'done') return;
    if (s === 'visiting') throw new DriverError(`modules.dep has a dependency cycle through ${path}`);
    state.set(path, 'visiting');
    for (const dep of deps.get(path) ?? []) visit(dep);
    state.set(path, 'done');
    order.push(path);
  };
  for (const name of names) {
    const key = name.replace(/-/g, '_');
    const path = byName.get(key);
    if (path === undefined) {
      if (builtin.has(key)) continue;
      throw new DriverError(`kernel module ${name} is neither in modules.dep nor built in`);
    }
    visit(path);
  }
  return order;
}

/** Read modules.dep and modules.builtin of an installed kernel. */
export async function loadKernelModules(modulesDir: string): Promise<{ deps: ModuleDeps; builtin: Set<string> }> {
  let depText: string;
  try {
    depText = await readFile(join(modulesDir, 'modules.dep'), 'utf8');
  } catch (err) {
    throw new DriverError(`cannot read ${modulesDir}/modules.dep: is the kernel's module package installed?`, { cause: err });
  }
  let builtinText = '';
  try {
    builtinText = await readFile(join(modulesDir, 'modules.builtin'), 'utf8');
  } catch {
    // optional: without it every name must be a module
  }
  const builtin = new Set(builtinText.split('\n').filter((l) => l !== '').map(moduleName));
  return { deps: parseModulesDep(depText), builtin };
}
