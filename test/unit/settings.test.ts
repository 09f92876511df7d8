import { exitCodeOf } from '../../src/api/error-map.js';
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadSettings, setting, SETTING_DECLS, SettingError, settings } from '../../src/config/settings.js';
import { settingsTable, withSettingsTable } from '../../src/config/settings-table.js';
import { UsageError } from '../../src/errors.js';

/** The checkout (this file runs as dist/test/unit/settings.test.js). */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const declared = new Set<string>(Object.values(SETTING_DECLS).map((d) => d.name));

function refusal(env: NodeJS.ProcessEnv): SettingError {
  try {
    loadSettings(env);
  } catch (e) {
    if (e instanceof SettingError) return e;
    throw e;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
}

describe('settings (GC_* environment variables)', () => {
  it('the README table is the one made from the declarations', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    expect(withSettingsTable(readme), 'README.md settings table is stale: run `node scripts/settings-table.mjs`').to.equal(readme);
    for (const name of declared) expect(readme).to.contain(`| \`${name}\` |`);
    expect(settingsTable().split('\n')).to.have.length(declared.size + 2);
  });

  it('every GC_ variable named in src/ is declared, and only src/config reads process.env.GC_*', () => {
    const named = new Set<string>();
    for (const file of sourceFiles(join(ROOT, 'src'))) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/\bGC_[A-Z][A-Z0-9_]*/g)) named.add(m[0]);
      if (!file.includes(`${join('src', 'config')}`)) expect(text, file).not.to.match(/process\.env\.GC_|process\.env\[['"]GC_/);
    }
    expect([...named].filter((n) => !declared.has(n))).to.deep.equal([]);
    expect(declared.size).to.equal(58);
  });

  it('defaults: everything under the state folder, which GC_STATE_DIR moves', () => {
    const d = loadSettings({});
    expect(d).to.include({ stateDir: '/var/lib/copper', socketPath: '/var/lib/copper/gcd.sock', configDir: '/var/lib/copper/config' });
    expect(d).to.include({ keyPrefix: 'copper', driver: 'qemu', killDelayMs: 10_000, lockDurationMs: 30_000, maxClones: 8, cloneConcurrency: 4 });
    expect(d).to.include({ snapshotRam: 'auto', logLevel: 'info', qemuBinary: 'qemu-system-x86_64' });
    expect(d.redisUrl).to.equal(undefined);
    expect(d.accel).to.equal(undefined);
    const moved = loadSettings({ GC_STATE_DIR: '/srv/gc' });
    expect(moved).to.include({ socketPath: '/srv/gc/gcd.sock', configDir: '/srv/gc/config', ramDir: '/dev/shm/copper/_srv_gc' });
    // An empty variable is the same as an unset one.
    expect(loadSettings({ GC_KILL_DELAY_MS: '', GC_ACCEL: '' })).to.include({ killDelayMs: 10_000, accel: undefined });
  });

  it('parses each type of value', () => {
    const s = loadSettings({
      GC_KILL_DELAY_MS: '500',
      GC_LOCK_MS: '3000',
      GC_CAPACITY_NCPUS: '16',
      GC_MAX_CLONES: '0',
      GC_ACCEL: 'tcg',
      GC_REDIS_URL: 'rediss://:pw@db:6380/1',
      GC_SERVER_NAME: 'srv-2',
      GC_DRIVER: 'fake',
      GC_STATE_DIR: 'rel',
    });
    expect(s).to.include({ killDelayMs: 500, lockDurationMs: 3000, capacityNcpus: 16, maxClones: 0, accel: 'tcg', driver: 'fake' });
    expect(s).to.include({ redisUrl: 'rediss://:pw@db:6380/1', serverName: 'srv-2', stateDir: join(process.cwd(), 'rel') });
  });

  it('a bad value is refused in one line naming the variable, as a SettingError with its fields', () => {
    const e = refusal({ GC_KILL_DELAY_MS: 'abc' });
    expect(e.message).to.equal('GC_KILL_DELAY_MS=abc: not a number of milliseconds');
    expect(e).to.be.instanceOf(UsageError);
    expect(e).to.include({ variable: 'GC_KILL_DELAY_MS', value: 'abc', reason: 'not a number of milliseconds' });
    expect(exitCodeOf(e)).to.equal(2);
    const cases: Array<[NodeJS.ProcessEnv, string]> = [
      [{ GC_KILL_DELAY_MS: '1e3' }, 'GC_KILL_DELAY_MS=1e3: not a number of milliseconds'],
      [{ GC_LOCK_MS: '50' }, 'GC_LOCK_MS=50: not a number of milliseconds >= 1000'],
      [{ GC_MAX_CLONES: '-1' }, 'GC_MAX_CLONES=-1: not a whole number >= 0'],
      [{ GC_CAPACITY_NCPUS: '0' }, 'GC_CAPACITY_NCPUS=0: not a whole number >= 1'],
      [{ GC_CLONE_CONCURRENCY: 'many' }, 'GC_CLONE_CONCURRENCY=many: not a whole number >= 1'],
      [{ GC_ACCEL: 'xen' }, "GC_ACCEL=xen: must be 'kvm' or 'tcg'"],
      [{ GC_LOG_LEVEL: 'loud' }, "GC_LOG_LEVEL=loud: must be one of 'error', 'warn', 'info', 'debug'"],
      [{ GC_DRIVER: 'kvm' }, "GC_DRIVER=kvm: must be 'qemu' or 'fake'"],
      [{ GC_SERVER_NAME: 'a b' }, 'GC_SERVER_NAME=a b: not a host name (letters, digits, -)'],
      [{ GC_DEBIAN_MIRROR: 'ftp://x/debian' }, 'GC_DEBIAN_MIRROR=ftp://x/debian: must be a http:// or https:// URL'],
      // The password of a Redis URL never reaches a message or a log.
      [{ GC_REDIS_URL: 'http://:secret@db:6379' }, 'GC_REDIS_URL=http://***@db:6379: must be a redis:// or rediss:// URL'],
      [{ GC_REDIS_URL: 'not a url' }, 'GC_REDIS_URL=not a url: not a URL'],
    ];
    for (const [env, msg] of cases) expect(refusal(env).message).to.equal(msg);
  });

  it('setting() reads one variable without minding the others', () => {
    expect(setting('qemuBinary', { GC_QEMU: '/opt/qemu', GC_KILL_DELAY_MS: 'abc' })).to.equal('/opt/qemu');
    expect(setting('socketPath', { GC_STATE_DIR: '/srv/gc' })).to.equal('/srv/gc/gcd.sock');
    expect(() => setting('killDelayMs', { GC_KILL_DELAY_MS: 'abc' })).to.throw(SettingError);
  });

  it('settings() parses an environment once', () => {
    const env = { GC_MAX_CLONES: '5' };
    const first = settings(env);
    env.GC_MAX_CLONES = '6';
    expect(settings(env)).to.equal(first);
    expect(settings(env).maxClones).to.equal(5);
  });

  it('a host tool and gcd given a bad setting print one line naming it and exit 2', () => {
    for (const [bin, prefix] of [
      ['gcqstat.js', 'gcqstat'],
      ['gcd.js', 'gcd'],
      ['gc.js', 'gc'],
    ] as const) {
      const r = spawnSync(process.execPath, [join(ROOT, 'bin', bin)], {
        env: { ...process.env, GC_STATE_DIR: '/nonexistent/copper-settings-test', GC_KILL_DELAY_MS: 'abc' },
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(r.stderr, bin).to.equal(`${prefix}: GC_KILL_DELAY_MS=abc: not a number of milliseconds\n`);
      expect(r.status, bin).to.equal(2);
    }
  });
});
