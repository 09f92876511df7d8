import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../../src/errors.js';
import { QUOTA_FILE_NAME, QuotaWatcher, emptyQuotaConfig, loadQuotaFile, parseQuotaText, suggest, type QuotaConfig } from '../../src/config/quotas.js';
import { DEFAULTS_FIELDS, QUEUE_FIELDS, QUOTA_SCHEMA, SYSTEM_FIELDS, TOP_KEYS } from '../../src/config/schema.js';

const EXAMPLE = fileURLToPath(new URL('../../../config/quotas.yaml', import.meta.url));

function refusal(text: string, file = 'quotas.yaml'): string {
  try {
    parseQuotaText(text, file);
  } catch (err) {
    expect(err).to.be.instanceOf(UsageError);
    const msg = (err as Error).message;
    expect(msg).not.to.include('\n');
    return msg;
  }
  throw new Error('expected a UsageError');
}

const lines = (...l: string[]): string => l.join('\n') + '\n';

describe('quota config: parsing', () => {
  it('accepts the documented example in config/', () => {
    const cfg = loadQuotaFile(EXAMPLE);
    expect(cfg.source).to.equal(EXAMPLE);
    expect(cfg.defaults.maxRunning).to.equal(32);
    expect(cfg.defaults.maxRunningMemMiB).to.equal(256 * 1024);
    expect(cfg.defaults.maxJobWalltimeSec).to.equal(7 * 86400);
    expect(cfg.users.get('alice')?.shares).to.equal(3);
    expect(cfg.groups.get('physics')?.maxRunningNcpus).to.equal(400);
    expect(cfg.queues.get('short')?.perUser.maxRunning).to.equal(10);
    expect(cfg.queues.get('short')?.priority).to.equal(10);
    expect(cfg.queues.get('maintenance')).to.include({ enabled: false, started: false });
    expect(cfg.queues.get('workq')).to.include({ enabled: true, started: true, defaultWalltimeSec: 3600, defaultNcpus: 1 });
    expect(cfg.defaultQueue).to.equal('workq');
    expect(cfg.historyTtlSec).to.equal(14 * 86400);
  });

  it('an empty file means no limits and no queues', () => {
    const cfg = parseQuotaText('# nothing yet\n', 'q.yaml');
    expect(cfg.defaults).to.deep.equal({});
    expect(cfg.system).to.deep.equal({});
    expect(cfg.queues.size).to.equal(0);
    expect(cfg.defaultQueue).to.equal(undefined);
    expect(cfg.historyTtlSec).to.equal(14 * 86400);
    expect(emptyQuotaConfig().queues.size).to.equal(0);
  });

  it('normalizes sizes to MiB, durations to seconds and unlimited to Infinity', () => {
    const cfg = parseQuotaText(
      lines(
        'defaults:',
        '  max_queued: 10',
        '  max_job_mem: 512mb',
        '  max_running_mem: 2t',
        '  max_job_walltime: 90:00',
        'users:',
        '  alice: {max_queued: unlimited, max_job_walltime: 1d12h}',
        '  bob:',
        'system:',
        '  max_job_walltime: 3600',
        'history_ttl: 0',
      ),
      'q.yaml',
    );
    expect(cfg.defaults).to.deep.equal({ maxQueued: 10, maxJobMemMiB: 512, maxRunningMemMiB: 2 * 1024 * 1024, maxJobWalltimeSec: 5400 });
    expect(cfg.users.get('alice')).to.deep.equal({ maxQueued: Infinity, maxJobWalltimeSec: 36 * 3600 });
    expect(cfg.users.get('bob')).to.deep.equal({});
    expect(cfg.system.maxJobWalltimeSec).to.equal(3600);
    expect(cfg.historyTtlSec).to.equal(0);
  });

  it('takes the only queue as default_queue', () => {
    const cfg = parseQuotaText('queues:\n  batch: {}\n', 'q.yaml');
    expect(cfg.defaultQueue).to.equal('batch');
    expect(cfg.queues.get('batch')).to.deep.equal({ enabled: true, started: true, priority: 0, name: 'batch', perUser: {} });
  });

  it('reads JSON too (YAML 1.2 is a superset), with line numbers', () => {
    const json = '{\n  "defaults": {\n    "max_queued": 5,\n    "max_runnig": 2\n  }\n}\n';
    expect(refusal(json, 'quotas.json')).to.equal('quotas.json:4: unknown key "max_runnig" in defaults; did you mean "max_running"?');
    expect(parseQuotaText('{"defaults": {"max_queued": 5}}', 'q.json').defaults.maxQueued).to.equal(5);
  });

  it('freezes the parsed configuration', () => {
    const cfg = parseQuotaText('defaults: {max_queued: 1}\n', 'q.yaml');
    expect(Object.isFrozen(cfg)).to.equal(true);
    expect(Object.isFrozen(cfg.defaults)).to.equal(true);
  });
});

describe('quota config: refusals (file:line: reason)', () => {
  it('a typo in a key, with a did-you-mean', () => {
    expect(refusal(lines('users:', '  alice:', '    max_queued: 10', '    max_runing: 3'))).to.equal(
      'quotas.yaml:4: unknown key "max_runing" in users.alice; did you mean "max_running"?',
    );
  });

  it('a PBS or Slurm name, with the Copper name suggested', () => {
    expect(refusal(lines('defaults:', '  max_run: 3'))).to.equal('quotas.yaml:2: unknown key "max_run" in defaults; did you mean "max_running"?');
    expect(refusal(lines('queues:', '  q:', '    max_submit_jobs: 3'))).to.equal(
      'quotas.yaml:3: unknown key "max_submit_jobs" in queues.q; did you mean "max_queued"?',
    );
    expect(refusal(lines('queue:', '  q: {}'))).to.equal('quotas.yaml:1: unknown key "queue" at the top level; did you mean "queues"?');
  });

  it('an unknown key with nothing close lists the known keys', () => {
    expect(refusal(lines('system:', '  frobnicate: 1'))).to.equal(
      'quotas.yaml:2: unknown key "frobnicate" in system; known keys: max_queued, max_running, max_running_ncpus, max_running_mem, max_job_ncpus, max_job_mem, max_job_walltime, max_clones',
    );
  });

  it('a key that exists elsewhere but not here (shares of the system, max_clones of a queue)', () => {
    expect(refusal(lines('system:', '  shares: 2'))).to.match(/^quotas\.yaml:2: unknown key "shares" in system; /);
    expect(refusal(lines('queues:', '  q:', '    max_clones: 2'))).to.match(/^quotas\.yaml:3: unknown key "max_clones" in queues\.q; /);
  });

  it('a wrong type', () => {
    expect(refusal(lines('# limits', 'users:', '  bob:', '    max_queued: ten'))).to.equal(
      'quotas.yaml:4: users.bob.max_queued: expected a whole number or unlimited, got "ten"',
    );
    expect(refusal(lines('users:', '  bob:', '    max_queued: 2.5'))).to.equal(
      'quotas.yaml:3: users.bob.max_queued: expected a whole number or unlimited, got 2.5',
    );
    expect(refusal(lines('queues:', '  q:', '    enabled: yes'))).to.equal('quotas.yaml:3: queues.q.enabled: expected true or false, got "yes"');
    expect(refusal(lines('users:', '  alice: 3'))).to.equal('quotas.yaml:2: users.alice: expected a mapping of keys, got 3');
    expect(refusal(lines('defaults:', '  max_queued:'))).to.equal('quotas.yaml:2: defaults.max_queued: expected a whole number or unlimited, got nothing');
    expect(refusal(lines('defaults:', '  max_queued: [1, 2]'))).to.equal(
      'quotas.yaml:2: defaults.max_queued: expected a whole number or unlimited, got a list',
    );
    expect(refusal('- a\n- b\n')).to.equal('quotas.yaml:1: the top level: expected a mapping of keys, got a list');
  });

  it('negative numbers', () => {
    expect(refusal(lines('users:', '  bob:', '    max_queued: -5'))).to.equal('quotas.yaml:3: users.bob.max_queued: -5 is negative; use 0 or more');
    expect(refusal(lines('defaults:', '  max_job_walltime: -10'))).to.equal('quotas.yaml:2: defaults.max_job_walltime: -10 is negative');
    expect(refusal(lines('defaults:', '  max_job_mem: -8gb'))).to.equal('quotas.yaml:2: defaults.max_job_mem: "-8gb" is negative');
    expect(refusal(lines('queues:', '  q:', '    default_ncpus: -1'))).to.equal('quotas.yaml:3: queues.q.default_ncpus: -1 is negative; use 1 or more');
    expect(refusal(lines('users:', '  a:', '    shares: -1'))).to.equal('quotas.yaml:3: users.a.shares: -1 must be above 0');
  });

  it('malformed sizes and durations', () => {
    expect(refusal(lines('defaults:', '  max_job_mem: 8'))).to.equal('quotas.yaml:2: defaults.max_job_mem: 8 has no unit; write a size such as 8gb or 512mb');
    expect(refusal(lines('defaults:', '  max_job_mem: "8"'))).to.equal(
      'quotas.yaml:2: defaults.max_job_mem: "8" has no unit; write a size such as 8gb or 512mb',
    );
    expect(refusal(lines('defaults:', '  max_job_mem: 8 gigs'))).to.equal(
      'quotas.yaml:2: defaults.max_job_mem: "8 gigs" is not a size; use e.g. 8gb, 512mb or 1024kb',
    );
    expect(refusal(lines('defaults:', '  max_job_mem: 1.5gb'))).to.equal(
      'quotas.yaml:2: defaults.max_job_mem: "1.5gb" has a fraction; use a smaller unit, e.g. 1536mb',
    );
    expect(refusal(lines('defaults:', '  max_job_mem: 0gb'))).to.equal('quotas.yaml:2: defaults.max_job_mem: "0gb" must be more than 0');
    expect(refusal(lines('defaults:', '  max_job_walltime: 1:75:00'))).to.equal(
      'quotas.yaml:2: defaults.max_job_walltime: "1:75:00" has minutes or seconds above 59',
    );
    expect(refusal(lines('defaults:', '  max_job_walltime: soon'))).to.equal(
      'quotas.yaml:2: defaults.max_job_walltime: "soon" is not a duration; use HH:MM:SS, or units such as 7d, 12h, 30m',
    );
    expect(refusal(lines('defaults:', '  max_job_walltime: 0'))).to.equal('quotas.yaml:2: defaults.max_job_walltime: must be more than 0 seconds');
    expect(refusal(lines('queues:', '  q:', '    priority: 2000'))).to.equal('quotas.yaml:3: queues.q.priority: 2000 is outside -1024..1023');
  });

  it('max_running above max_queued, in one entity and through defaults', () => {
    expect(refusal(lines('users:', '  alice:', '    max_queued: 10', '    max_running: 20'))).to.equal(
      'quotas.yaml:4: users.alice: max_running=20 is above max_queued=10; a running job counts as queued too',
    );
    expect(refusal(lines('defaults:', '  max_queued: 10', 'users:', '  alice:', '    max_running: 20'))).to.equal(
      'quotas.yaml:5: users.alice: max_running=20 is above max_queued=10 (from defaults); a running job counts as queued too',
    );
    expect(refusal(lines('defaults:', '  max_running: 20', 'users:', '  alice:', '    max_queued: 10'))).to.equal(
      'quotas.yaml:5: users.alice: max_running=20 (from defaults) is above max_queued=10; a running job counts as queued too',
    );
    expect(refusal(lines('groups:', '  g:', '    max_queued: 1', '    max_running: unlimited'))).to.equal(
      'quotas.yaml:4: groups.g: max_running=unlimited is above max_queued=1; a running job counts as queued too',
    );
    // unlimited on the user lifts the inherited cap: no contradiction.
    expect(() => parseQuotaText(lines('defaults:', '  max_running: 20', 'users:', '  alice:', '    max_queued: unlimited'), 'q')).not.to.throw();
  });

  it('a per-job maximum above the running total', () => {
    expect(refusal(lines('system:', '  max_running_mem: 64gb', '  max_job_mem: 128gb'))).to.equal(
      'quotas.yaml:3: system: max_job_mem=128gb is above max_running_mem=64gb; such a job could never start',
    );
    expect(refusal(lines('queues:', '  q:', '    per_user:', '      max_job_ncpus: 8', '      max_running_ncpus: 4'))).to.equal(
      'quotas.yaml:4: queues.q.per_user: max_job_ncpus=8 is above max_running_ncpus=4; such a job could never start',
    );
  });

  it('a queue default above its maximum', () => {
    expect(refusal(lines('queues:', '  short:', '    max_job_walltime: 01:00:00', '    default_walltime: 2h'))).to.equal(
      'quotas.yaml:4: queues.short: default_walltime=02:00:00 is above max_job_walltime=01:00:00; a job that asks nothing would be refused',
    );
    expect(refusal(lines('system:', '  max_job_ncpus: 2', 'queues:', '  q:', '    default_ncpus: 4'))).to.equal(
      'quotas.yaml:5: queues.q: default_ncpus=4 is above system.max_job_ncpus=2; a job that asks nothing would be refused',
    );
  });

  it('default_queue must name a queue, and is needed with several queues', () => {
    expect(refusal(lines('queues:', '  workq: {}', '  short: {}', 'default_queue: wrkq'))).to.equal(
      'quotas.yaml:4: default_queue: "wrkq" is not a queue; did you mean "workq"?',
    );
    expect(refusal(lines('default_queue: workq'))).to.equal('quotas.yaml:1: default_queue: "workq" is not a queue; no queue is defined under queues');
    expect(refusal(lines('# two queues', 'queues:', '  a: {}', '  b: {}'))).to.equal(
      'quotas.yaml:2: queues: 2 queues are defined but default_queue is not set; name the queue of jobs submitted without -q (one of a, b)',
    );
  });

  it('names: PBS entity names and invalid characters', () => {
    expect(refusal(lines('users:', '  PBS_GENERIC: {max_queued: 1}'))).to.equal(
      'quotas.yaml:2: users.PBS_GENERIC: write the default user\'s limits under "defaults:"',
    );
    expect(refusal(lines('groups:', '  "bad name": {}'))).to.equal('quotas.yaml:2: groups: "bad name" is not a valid group name');
    expect(refusal(lines('queues:', '  9lives: {}'))).to.equal('quotas.yaml:2: queues: "9lives" is not a valid queue name');
  });

  it('YAML syntax errors and duplicate keys', () => {
    expect(refusal(lines('defaults:', '  max_queued: 1', '\tmax_running: 2'))).to.equal(
      'quotas.yaml:3: YAML syntax error: Tabs are not allowed as indentation',
    );
    expect(refusal(lines('# users', 'users: alice: 1'))).to.equal('quotas.yaml:2: YAML syntax error: Nested mappings are not allowed in compact mappings');
    expect(refusal(lines('users:', '  alice: {}', '  alice: {}'))).to.equal(
      'quotas.yaml:3: YAML syntax error: duplicate key: each key may appear only once in a mapping',
    );
  });

  it('loadQuotaFile names the path of a missing file', () => {
    expect(() => loadQuotaFile('/nonexistent/quotas.yaml')).to.throw(UsageError, '/nonexistent/quotas.yaml: no such file');
  });

  it('suggest() finds typos and aliases, and nothing far away', () => {
    expect(suggest('max_qeued', ['max_queued', 'max_running'])).to.equal('max_queued');
    expect(suggest('walltime', ['max_job_walltime'])).to.equal('max_job_walltime');
    expect(suggest('zzz', ['max_queued'])).to.equal(undefined);
  });
});

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument -- these tests walk a JSON Schema document */
describe('quota config: JSON Schema', () => {
  it('documents every top-level key and every field', () => {
    const s = QUOTA_SCHEMA as Record<string, any>;
    expect(Object.keys(s.properties).sort()).to.deep.equal([...TOP_KEYS].sort());
    for (const f of DEFAULTS_FIELDS) expect(s.properties.defaults.properties[f.key].description, f.key).to.be.a('string').and.not.equal('');
    for (const f of SYSTEM_FIELDS) expect(s.properties.system.properties[f.key]).to.have.property('description');
    for (const f of QUEUE_FIELDS) expect(s.$defs.queue.properties[f.key]).to.have.property('description');
    expect(s.$defs.queue.properties.per_user.additionalProperties).to.equal(false);
    expect(s.additionalProperties).to.equal(false);
  });

  it('its size pattern agrees with the loader', () => {
    const re = new RegExp((QUOTA_SCHEMA as any).properties.defaults.properties.max_job_mem.anyOf[0].pattern, 'i');
    for (const ok of ['8gb', '512mb', '2t', '100kw']) expect(re.test(ok), ok).to.equal(true);
    for (const bad of ['8', '8 gb', '1.5gb', 'gb']) expect(re.test(bad), bad).to.equal(false);
  });
});

// ------------------------------------------------------------------- watcher

function waitFor<T>(register: (resolve: (v: T) => void) => void, ms = 5000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`nothing after ${ms} ms`)), ms);
    register((v) => {
      clearTimeout(t);
      resolve(v);
    });
  });
}

describe('quota config: QuotaWatcher', () => {
  let dir: string;
  let file: string;
  let watcher: QuotaWatcher | undefined;
  let errors: UsageError[];
  let reloads: QuotaConfig[];
  let onError: ((e: UsageError) => void) | undefined;
  let onReload: ((c: QuotaConfig) => void) | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'copper-quotas-'));
    file = join(dir, QUOTA_FILE_NAME);
    errors = [];
    reloads = [];
    onError = undefined;
    onReload = undefined;
  });

  afterEach(() => {
    watcher?.close();
    watcher = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  const make = (opts: { watch?: boolean; signal?: NodeJS.Signals | null } = {}): QuotaWatcher =>
    (watcher = new QuotaWatcher({
      dir,
      debounceMs: 50,
      watch: opts.watch ?? false,
      signal: opts.signal === undefined ? null : opts.signal,
      onError: (e) => {
        errors.push(e);
        onError?.(e);
      },
      onReload: (c) => {
        reloads.push(c);
        onReload?.(c);
      },
    }));

  it('runs on built-in defaults when there is no file', () => {
    const w = make();
    const cfg = w.start();
    expect(cfg.queues.size).to.equal(0);
    expect(w.current()).to.equal(cfg);
    expect(w.reload()).to.equal(true);
    expect(errors).to.deep.equal([]);
  });

  it('refuses to start on a broken file', () => {
    writeFileSync(file, 'defaults:\n  max_queued: lots\n');
    expect(() => make().start()).to.throw(UsageError, `${file}:2: defaults.max_queued: expected a whole number or unlimited, got "lots"`);
  });

  it('reloads a good file and keeps the previous settings when the new one is broken', () => {
    writeFileSync(file, 'defaults:\n  max_queued: 10\n');
    const w = make();
    expect(w.start().defaults.maxQueued).to.equal(10);

    writeFileSync(file, 'defaults:\n  max_queued: 20\n');
    expect(w.reload()).to.equal(true);
    expect(w.current().defaults.maxQueued).to.equal(20);
    expect(reloads).to.have.length(1);

    writeFileSync(file, 'defaults:\n  max_queued: 20\n  max_runing: 5\n');
    expect(w.reload()).to.equal(false);
    expect(w.current().defaults.maxQueued).to.equal(20);
    expect(errors.map((e) => e.message)).to.deep.equal([`${file}:3: unknown key "max_runing" in defaults; did you mean "max_running"?`]);

    unlinkSync(file);
    expect(w.reload()).to.equal(false);
    expect(w.current().defaults.maxQueued).to.equal(20);
    expect(errors[1]?.message).to.equal(`${file}: the file is gone; keeping the previous settings (write an empty file to drop every limit)`);
  });

  it('reloads on SIGHUP', async () => {
    writeFileSync(file, 'defaults:\n  max_running: 1\n');
    const w = make({ signal: 'SIGHUP' });
    w.start();
    writeFileSync(file, 'defaults:\n  max_running: 2\n');
    const got = waitFor<QuotaConfig>((r) => (onReload = r));
    process.kill(process.pid, 'SIGHUP');
    expect((await got).defaults.maxRunning).to.equal(2);
    expect(w.current().defaults.maxRunning).to.equal(2);
    const before = process.listenerCount('SIGHUP');
    w.close();
    expect(process.listenerCount('SIGHUP')).to.equal(before - 1);
  });

  it('reloads when the file changes (debounced), and reports a broken change', async () => {
    writeFileSync(file, 'defaults:\n  max_running: 1\n');
    const w = make({ watch: true });
    w.start();

    let got = waitFor<QuotaConfig>((r) => (onReload = r));
    writeFileSync(file, 'defaults:\n  max_running: 3\n');
    expect((await got).defaults.maxRunning).to.equal(3);

    const bad = waitFor<UsageError>((r) => (onError = r));
    writeFileSync(file, 'defaults:\n  max_running: -3\n');
    expect((await bad).message).to.equal(`${file}:2: defaults.max_running: -3 is negative; use 0 or more`);
    expect(w.current().defaults.maxRunning).to.equal(3);

    // An editor's save: write a temporary file, rename it over the old one.
    got = waitFor<QuotaConfig>((r) => (onReload = r));
    const tmp = join(dir, '.quotas.yaml.swp');
    writeFileSync(tmp, 'defaults:\n  max_running: 4\n');
    const { renameSync } = await import('node:fs');
    renameSync(tmp, file);
    expect((await got).defaults.maxRunning).to.equal(4);
    expect(readFileSync(file, 'utf8')).to.include('4');
  });

  it('a burst of writes reloads once', async () => {
    writeFileSync(file, 'defaults:\n  max_running: 1\n');
    const w = make({ watch: true });
    w.start();
    for (let i = 2; i <= 6; i++) writeFileSync(file, `defaults:\n  max_running: ${i}\n`);
    await new Promise((r) => setTimeout(r, 400));
    expect(w.current().defaults.maxRunning).to.equal(6);
    expect(reloads.length).to.be.at.most(2);
  });
});
