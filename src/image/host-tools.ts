/** What the image build needs of the host: its commands, its kernel, its Debian mirror. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DriverError } from '../errors.js';

export async function newestKernel(): Promise<string> {
  const versions = (await readdir('/boot'))
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(`/lib/modules/${v}/modules.dep`))
    .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const newest = versions.at(-1);
  if (newest === undefined) {
    throw new DriverError('no host kernel with modules in /boot and /lib/modules: apt-get install linux-image-amd64');
  }
  return newest;
}

/** The Debian mirror this host's apt uses for the main archive (not security), if any. */
export async function hostMirror(suite: string): Promise<string | undefined> {
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of await readdir('/etc/apt/sources.list.d')) files.push(join('/etc/apt/sources.list.d', f));
  } catch {
    // no sources.list.d
  }
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      continue;
    }
    const oneLine = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/gm;
    for (const m of text.matchAll(oneLine)) {
      if (m[2] === suite && !m[1]!.includes('security')) return m[1]!.replace(/\/$/, '');
    }
    // deb822: a stanza with URIs: and Suites: that lists the suite
    for (const stanza of text.split(/\n\s*\n/)) {
      const uris = /^URIs:\s*(.+)$/im.exec(stanza)?.[1]?.trim().split(/\s+/);
      const suites = /^Suites:\s*(.+)$/im.exec(stanza)?.[1]?.trim().split(/\s+/);
      const types = /^Types:\s*(.+)$/im.exec(stanza)?.[1] ?? 'deb';
      if (uris && suites?.includes(suite) && /\bdeb\b/.test(types)) {
        const uri = uris.find((u) => !u.includes('security'));
        if (uri !== undefined) return uri.replace(/\/$/, '');
      }
    }
  }
  return undefined;
}

export async function duBytes(dir: string): Promise<number> {
  const out = await run('du', ['-sb', dir]);
  return Number.parseInt(out.split(/\s/)[0] ?? '0', 10);
}

export async function requireTool(tool: string): Promise<void> {
  const dirs = ['/usr/sbin', '/usr/bin', '/sbin', '/bin', ...(process.env.PATH ?? '').split(':')];
  if (!dirs.some((d) => d !== '' && existsSync(join(d, tool)))) {
    const pkg: Record<string, string> = { debootstrap: 'debootstrap', 'mkfs.ext4': 'e2fsprogs', 'qemu-img': 'qemu-utils', depmod: 'kmod' };
    throw new DriverError(`${tool} is missing: apt-get install ${pkg[tool] ?? tool}`);
  }
}

export function secs(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

/** Run a host command; its stdout is returned, and its stderr tail goes into the error if it fails. */
export function run(cmd: string, args: string[], extraEnv: Record<string, string> = {}): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const env = { ...process.env, ...extraEnv, PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ''}` };
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000);
    });
    child.on('error', (e) => reject(new DriverError(`cannot run ${cmd}: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      if (code === 0) resolvePromise(out);
      else {
        const why = signal !== null ? `killed by ${signal}` : `exit status ${code}`;
        const tail = (err.trim() || out.trim()).split('\n').slice(-8).join('\n');
        reject(new DriverError(`${cmd} failed (${why})${tail ? `:\n${tail}` : ''}`));
      }
    });
  });
}
