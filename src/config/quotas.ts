/**
 * The admin quota and queue configuration: `<configDir>/quotas.yaml` (see docs/quotas.md).
 *
 * `parseQuotaText` turns the file into a `QuotaConfig` or refuses it whole with a UsageError
 * whose one-line message is `file:line: reason`: YAML syntax, an unknown key (with a
 * did-you-mean), a wrong type, a negative number, a malformed size or duration, and
 * contradictions (max_running above max_queued, a queue default above its maximum, ...).
 * `QuotaWatcher` keeps the current configuration of a config folder and reloads it on SIGHUP
 * and on file changes, keeping the previous settings when the new file is broken.
 *
 * In a parsed configuration, a limit left out is `undefined` (inherit / no limit) and a limit
 * written as `unlimited` is `Infinity` (it overrides what would be inherited).
 */
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type Node } from 'yaml';
import { UsageError, errorMessage } from '../errors.js';
import { formatSize, formatWalltime, parseSize, parseWalltime } from '../pbs/units.js';
import {
  DEFAULTS_FIELDS,
  DEFAULT_HISTORY_TTL_SEC,
  DURATION_TEXT,
  ENTITY_NAME,
  GROUP_FIELDS,
  KEY_ALIASES,
  PER_USER_FIELDS,
  QUEUE_FIELDS,
  QUEUE_NAME,
  SIZE_WITH_UNIT,
  SYSTEM_FIELDS,
  TOP_FIELDS,
  TOP_KEYS,
  USER_FIELDS,
  type FieldSpec,
} from './schema.js';

// ------------------------------------------------------------------------- types

/** Limits any entity may set. undefined: not set here; Infinity: written `unlimited`. */
export interface Limits {
  /** Jobs not finished yet (queued, held, waiting, running, exiting). */
  maxQueued?: number;
  maxRunning?: number;
  maxRunningNcpus?: number;
  maxRunningMemMiB?: number;
  maxJobNcpus?: number;
  maxJobMemMiB?: number;
  maxJobWalltimeSec?: number;
}

/** A user, a group, or the default user. */
export interface EntityLimits extends Limits {
  /** Live `gc clone` VMs. */
  maxClones?: number;
  /** Fair-share weight (> 0). */
  shares?: number;
}

export type SystemLimits = Omit<EntityLimits, 'shares'>;

export interface QueueConfig extends Limits {
  name: string;
  /** Accepts new jobs. */
  enabled: boolean;
  /** Its jobs may start. */
  started: boolean;
  /** -1024..1023, higher first. */
  priority: number;
  defaultWalltimeSec?: number;
  defaultNcpus?: number;
  /** Limits for each user inside this queue. */
  perUser: Limits;
}

export interface QuotaConfig {
  /** The file it was read from (or a label such as `(built-in defaults)`). */
  source: string;
  /** u:PBS_GENERIC. */
  defaults: EntityLimits;
  /** o:PBS_ALL. */
  system: SystemLimits;
  users: ReadonlyMap<string, EntityLimits>;
  groups: ReadonlyMap<string, EntityLimits>;
  /** Empty: no queue is defined, any queue name is accepted and no queue limit applies. */
  queues: ReadonlyMap<string, QueueConfig>;
  /** The queue of a job submitted without -q; set whenever `queues` is not empty. */
  defaultQueue?: string;
  historyTtlSec: number;
  /** Custom `-l` resources jobs may ask for (recorded, not enforced); others are refused. */
  resources: readonly string[];
}

/** The file name QuotaWatcher reads inside the config folder. */
export const QUOTA_FILE_NAME = 'quotas.yaml';

/** No limits, no queues: what a machine without a quotas file runs with. */
export function emptyQuotaConfig(source = '(built-in defaults)'): QuotaConfig {
  return freezeConfig({
    source,
    defaults: {},
    system: {},
    users: new Map(),
    groups: new Map(),
    queues: new Map(),
    historyTtlSec: DEFAULT_HISTORY_TTL_SEC,
    resources: [],
  });
}

// ------------------------------------------------------------ value formatting

/** A limit as the file would write it: `unlimited`, `8gb`, `01:00:00`, `10`. */
export function formatLimit(kind: 'count' | 'size' | 'duration', value: number): string {
  if (value === Infinity) return 'unlimited';
  if (kind === 'size') return formatSize(value);
  if (kind === 'duration') return formatWalltime(value);
  return String(value);
}

// --------------------------------------------------------------- did-you-mean

/** Edit distance where swapping two neighbouring letters counts as one edit (optimal string alignment). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => (d[i] as number[])[j] as number;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1);
      (d[i] as number[])[j] = v;
    }
  }
  return at(a.length, b.length);
}

/** The closest candidate within a typo's reach, or a known PBS/Slurm alias that is allowed here. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  const lower = word.toLowerCase();
  const alias = KEY_ALIASES[lower.replace(/[.\s-]/g, '_')];
  if (alias !== undefined && candidates.includes(alias)) return alias;
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(lower, c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  const reach = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  return bestD <= reach ? best : undefined;
}

// ---------------------------------------------------------------------- reader

interface Entry {
  key: string;
  keyNode: Node | null;
  value: Node | null;
}

/** Walks the YAML tree, remembering the line of every key so later checks can point at it. */
class Reader {
  /** `users.alice.max_running` -> line. */
  readonly lines = new Map<string, number>();

  constructor(
    private readonly file: string,
    private readonly doc: Document,
    private readonly lc: LineCounter,
  ) {}

  lineOf(node: Node | null | undefined): number {
    const at = node?.range?.[0];
    return at === undefined ? 1 : this.lc.linePos(at).line;
  }

  failAt(line: number, reason: string): never {
    throw new UsageError(`${this.file}:${line}: ${reason}`);
  }

  fail(node: Node | null | undefined, reason: string): never {
    this.failAt(this.lineOf(node), reason);
  }

  resolve(node: unknown): Node | null {
    if (node === null || node === undefined) return null;
    if (isAlias(node)) return (node.resolve(this.doc) as Node | undefined) ?? null;
    return node as Node;
  }

  /** The entries of a mapping; `where` names it in messages. */
  entries(node: Node | null, where: string, at: Node | null): Entry[] {
    if (node === null || (isScalar(node) && node.value === null)) return []; // `users:` with nothing under it
    if (!isMap(node)) this.fail(node ?? at, `${where}: expected a mapping of keys, got ${describe(node)}`);
    return node.items.map((pair) => {
      const keyNode = this.resolve(pair.key);
      if (keyNode !== null && !isScalar(keyNode)) this.fail(keyNode, `${where}: a key must be a plain name, got ${describe(keyNode)}`);
      const key = keyNode === null ? '' : String(keyNode.value);
      return { key, keyNode, value: this.resolve(pair.value) };
    });
  }

  unknownKey(e: Entry, where: string, known: readonly string[]): never {
    const place = where === '' ? 'at the top level' : `in ${where}`;
    const guess = suggest(e.key, known);
    const tail = guess !== undefined ? `did you mean "${guess}"?` : `known keys: ${known.join(', ')}`;
    this.fail(e.keyNode, `unknown key "${e.key}" ${place}; ${tail}`);
  }

  /** Reads a block of fields; `nested` handles keys that hold a block of their own. */
  fields(
    node: Node | null,
    path: string,
    specs: readonly FieldSpec[],
    at: Node | null,
    nested: Record<string, (e: Entry, path: string) => void> = {},
  ): Record<string, number | boolean | string> {
    const out: Record<string, number | boolean | string> = {};
    const known = [...specs.map((s) => s.key), ...Object.keys(nested)];
    for (const e of this.entries(node, path, at)) {
      const full = `${path}.${e.key}`;
      this.lines.set(full, this.lineOf(e.keyNode));
      const sub = nested[e.key];
      if (sub) {
        sub(e, full);
        continue;
      }
      const spec = specs.find((s) => s.key === e.key);
      if (!spec) this.unknownKey(e, path, known);
      out[spec.prop] = this.value(e, full, spec);
    }
    return out;
  }

  value(e: Entry, path: string, spec: FieldSpec): number | boolean | string {
    const node = e.value;
    if (node === null || !isScalar(node) || node.value === null) {
      this.fail(node ?? e.keyNode, `${path}: expected ${expectation(spec)}, got ${describe(node)}`);
    }
    const v = node.value;
    const bad = (why: string): never => this.fail(node, `${path}: ${why}`);
    const got = typeof v === 'string' ? `"${v}"` : String(v);
    const unlimitedOk = spec.kind === 'count' || spec.kind === 'size' || spec.kind === 'duration';
    if (v === 'unlimited' && unlimitedOk) return Infinity;
    switch (spec.kind) {
      case 'boolean':
        if (typeof v !== 'boolean') bad(`expected true or false, got ${got}`);
        return v as boolean;
      case 'queueName':
        if (typeof v !== 'string' || !QUEUE_NAME.test(v)) bad(`expected a queue name, got ${got}`);
        return v as string;
      case 'shares':
        if (typeof v !== 'number' || !Number.isFinite(v)) bad(`expected a number above 0, got ${got}`);
        if ((v as number) <= 0) bad(`${got} must be above 0`);
        return v as number;
      case 'count':
      case 'ncpus':
      case 'priority': {
        if (typeof v !== 'number' || !Number.isInteger(v)) bad(`expected ${expectation(spec)}, got ${got}`);
        const n = v as number;
        if (spec.kind === 'priority') {
          if (n < -1024 || n > 1023) bad(`${n} is outside -1024..1023`);
        } else if (n < 0) {
          bad(`${n} is negative; use ${spec.kind === 'ncpus' ? '1' : '0'} or more`);
        } else if (spec.kind === 'ncpus' && n < 1) {
          bad(`${n} must be at least 1`);
        }
        return n;
      }
      case 'size':
        if (typeof v === 'number') {
          if (v < 0) bad(`${got} is negative`);
          bad(`${got} has no unit; write a size such as 8gb or 512mb`);
        }
        if (typeof v !== 'string') bad(`expected ${expectation(spec)}, got ${got}`);
        if ((v as string).startsWith('-')) bad(`${got} is negative`);
        if (/^\d+$/.test(v as string)) bad(`${got} has no unit; write a size such as 8gb or 512mb`);
        if (!SIZE_WITH_UNIT.test(v as string)) {
          bad(/^\d+\.\d+/.test(v as string) ? `${got} has a fraction; use a smaller unit, e.g. 1536mb` : `${got} is not a size; use e.g. 8gb, 512mb or 1024kb`);
        }
        return this.catching(node, path, () => parseSize(v as string, path));
      case 'duration':
      case 'walltime':
      case 'ttl': {
        const zeroOk = spec.kind === 'ttl';
        if (typeof v === 'number') {
          if (!Number.isInteger(v)) bad(`expected ${expectation(spec)}, got ${got}`);
          if (v < 0) bad(`${got} is negative`);
          if (v === 0 && !zeroOk) bad('must be more than 0 seconds');
          return v;
        }
        if (typeof v !== 'string') bad(`expected ${expectation(spec)}, got ${got}`);
        const s = v as string;
        if (s.startsWith('-')) bad(`${got} is negative`);
        if (!DURATION_TEXT.test(s)) bad(`${got} is not a duration; use HH:MM:SS, or units such as 7d, 12h, 30m`);
        const sec = s.includes(':') ? this.catching(node, path, () => parseWalltime(s, path)) : unitSeconds(s);
        if (sec === 0 && !zeroOk) bad(`${got} must be more than 0 seconds`);
        return sec;
      }
    }
  }

  /** Re-throws a units.ts UsageError (`label: "text" problem`) with this file's position. */
  private catching<T>(node: Node, path: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      this.fail(node, errorMessage(err).startsWith(path) ? errorMessage(err) : `${path}: ${errorMessage(err)}`);
    }
  }
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** `1d12h30m` -> seconds (the text already matched DURATION_TEXT). */
function unitSeconds(text: string): number {
  let total = 0;
  for (const m of text.toLowerCase().matchAll(/(\d+)([smhdw])/g)) total += Number(m[1]) * (UNIT_SECONDS[m[2] as string] as number);
  return total;
}

function expectation(spec: FieldSpec): string {
  switch (spec.kind) {
    case 'count':
      return 'a whole number or unlimited';
    case 'ncpus':
      return 'a whole number of cpus (1 or more)';
    case 'priority':
      return 'a whole number -1024..1023';
    case 'size':
      return 'a size such as 8gb, or unlimited';
    case 'duration':
      return 'a duration such as 01:30:00 or 7d, or unlimited';
    case 'walltime':
    case 'ttl':
      return 'a duration such as 01:30:00 or 7d';
    case 'boolean':
      return 'true or false';
    case 'shares':
      return 'a number above 0';
    case 'queueName':
      return 'a queue name';
  }
}

function describe(node: Node | null): string {
  if (node === null) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return 'nothing';
    return typeof v === 'string' ? `"${v}"` : String(v);
  }
  return 'an unexpected value';
}

// --------------------------------------------------------------- contradictions

type LimitProp = keyof Limits;

/** Pairs (small, big): small above big can never be satisfied. */
const PAIRS: readonly { small: LimitProp; big: LimitProp; kind: 'count' | 'size'; why: string }[] = [
  { small: 'maxRunning', big: 'maxQueued', kind: 'count', why: 'a running job counts as queued too' },
  { small: 'maxJobNcpus', big: 'maxRunningNcpus', kind: 'count', why: 'such a job could never start' },
  { small: 'maxJobMemMiB', big: 'maxRunningMemMiB', kind: 'size', why: 'such a job could never start' },
];

const KEY_OF: Record<string, string> = Object.fromEntries(
  [...QUEUE_FIELDS, ...DEFAULTS_FIELDS, ...TOP_FIELDS].map((f) => [f.prop, f.key]),
);

/**
 * `own` is what the entity sets itself, `inherited` what it falls back to (defaults for a user).
 * Reports only when the entity itself sets one side (otherwise the other entity is reported).
 */
function checkPairs(r: Reader, path: string, own: Limits, inherited: Limits, inheritedFrom: string): void {
  for (const p of PAIRS) {
    const ownSmall = own[p.small];
    const ownBig = own[p.big];
    if (ownSmall === undefined && ownBig === undefined) continue;
    const small = ownSmall ?? inherited[p.small];
    const big = ownBig ?? inherited[p.big];
    if (small === undefined || big === undefined || small <= big) continue;
    const sk = KEY_OF[p.small] as string;
    const bk = KEY_OF[p.big] as string;
    const from = (v: number | undefined): string => (v === undefined ? ` (from ${inheritedFrom})` : '');
    const line = r.lines.get(`${path}.${ownSmall !== undefined ? sk : bk}`) ?? 1;
    r.failAt(
      line,
      `${path}: ${sk}=${formatLimit(p.kind, small)}${from(ownSmall)} is above ${bk}=${formatLimit(p.kind, big)}${from(ownBig)}; ${p.why}`,
    );
  }
}

function checkQueueDefaults(r: Reader, q: QueueConfig, system: SystemLimits): void {
  const path = `queues.${q.name}`;
  const maxima: [string, Limits][] = [
    [`max_job_`, q],
    [`per_user.max_job_`, q.perUser],
    [`system.max_job_`, system],
  ];
  const checks: [string, number | undefined, 'maxJobWalltimeSec' | 'maxJobNcpus', string, 'duration' | 'count'][] = [
    ['default_walltime', q.defaultWalltimeSec, 'maxJobWalltimeSec', 'walltime', 'duration'],
    ['default_ncpus', q.defaultNcpus, 'maxJobNcpus', 'ncpus', 'count'],
  ];
  for (const [key, value, prop, suffix, kind] of checks) {
    if (value === undefined) continue;
    for (const [prefix, limits] of maxima) {
      const max = limits[prop];
      if (max !== undefined && value > max) {
        r.failAt(
          r.lines.get(`${path}.${key}`) ?? 1,
          `${path}: ${key}=${formatLimit(kind, value)} is above ${prefix}${suffix}=${formatLimit(kind, max)}; a job that asks nothing would be refused`,
        );
      }
    }
  }
}

// ---------------------------------------------------------------------- parse

const RESERVED: Record<string, string> = {
  PBS_GENERIC: 'write the default user\'s limits under "defaults:"',
  PBS_ALL: 'write the limits of the whole system under "system:"',
};

function freezeConfig(c: QuotaConfig): QuotaConfig {
  Object.freeze(c.defaults);
  Object.freeze(c.system);
  Object.freeze(c.resources);
  for (const v of c.users.values()) Object.freeze(v);
  for (const v of c.groups.values()) Object.freeze(v);
  for (const q of c.queues.values()) Object.freeze(Object.freeze(q).perUser);
  return Object.freeze(c);
}

/**
 * Parses the text of a quotas file. `fileName` is only used in messages (`fileName:line: ...`).
 * YAML 1.2 (so JSON is accepted too). Throws UsageError on the first problem found.
 */
export function parseQuotaText(text: string, fileName: string): QuotaConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    const line = lc.linePos(first.pos[0]).line;
    const msg = first.code === 'DUPLICATE_KEY' ? 'duplicate key: each key may appear only once in a mapping' : first.message.split('\n')[0];
    throw new UsageError(`${fileName}:${line}: YAML syntax error: ${msg}`);
  }
  const r = new Reader(fileName, doc, lc);
  const root = r.resolve(doc.contents);
  const topKeys = [...TOP_KEYS] as string[];

  let defaults: EntityLimits = {};
  let system: SystemLimits = {};
  const users = new Map<string, EntityLimits>();
  const groups = new Map<string, EntityLimits>();
  const queues = new Map<string, QueueConfig>();
  let defaultQueue: string | undefined;
  let defaultQueueNode: Node | null = null;
  let queuesNode: Node | null = null;
  let historyTtlSec = DEFAULT_HISTORY_TTL_SEC;
  let resources: string[] = [];

  const named = (e: Entry, kind: 'user' | 'group' | 'queue', pattern: RegExp, each: (name: string, entry: Entry) => void): void => {
    for (const n of r.entries(e.value, e.key, e.keyNode)) {
      if (RESERVED[n.key] !== undefined) r.fail(n.keyNode, `${e.key}.${n.key}: ${RESERVED[n.key]}`);
      if (!pattern.test(n.key)) r.fail(n.keyNode, `${e.key}: "${n.key}" is not a valid ${kind} name`);
      r.lines.set(`${e.key}.${n.key}`, r.lineOf(n.keyNode));
      each(n.key, n);
    }
  };

  for (const e of r.entries(root, 'the top level', null)) {
    r.lines.set(e.key, r.lineOf(e.keyNode));
    switch (e.key) {
      case 'defaults':
        defaults = r.fields(e.value, 'defaults', DEFAULTS_FIELDS, e.keyNode) as EntityLimits;
        break;
      case 'system':
        system = r.fields(e.value, 'system', SYSTEM_FIELDS, e.keyNode) as SystemLimits;
        break;
      case 'users':
        named(e, 'user', ENTITY_NAME, (name, n) => users.set(name, r.fields(n.value, `users.${name}`, USER_FIELDS, n.keyNode) as EntityLimits));
        break;
      case 'groups':
        named(e, 'group', ENTITY_NAME, (name, n) => groups.set(name, r.fields(n.value, `groups.${name}`, GROUP_FIELDS, n.keyNode) as EntityLimits));
        break;
      case 'queues':
        queuesNode = e.keyNode;
        named(e, 'queue', QUEUE_NAME, (name, n) => {
          let perUser: Limits = {};
          const own = r.fields(n.value, `queues.${name}`, QUEUE_FIELDS, n.keyNode, {
            per_user: (p, path) => {
              perUser = r.fields(p.value, path, PER_USER_FIELDS, p.keyNode) as Limits;
            },
          });
          queues.set(name, { enabled: true, started: true, priority: 0, ...own, name, perUser } as QueueConfig);
        });
        break;
      case 'default_queue':
      case 'history_ttl': {
        const spec = TOP_FIELDS.find((f) => f.key === e.key) as FieldSpec;
        const v = r.value(e, e.key, spec);
        if (e.key === 'default_queue') {
          defaultQueue = v as string;
          defaultQueueNode = e.value ?? e.keyNode;
        } else {
          historyTtlSec = v as number;
        }
        break;
      }
      case 'resources':
        resources = parseResourceNames(r, e);
        break;
      default:
        r.unknownKey(e, '', topKeys);
    }
  }

  // Contradictions, each reported at the line of the key that makes it.
  checkPairs(r, 'defaults', defaults, {}, 'defaults');
  checkPairs(r, 'system', system, {}, 'system');
  for (const [name, u] of users) checkPairs(r, `users.${name}`, u, defaults, 'defaults');
  for (const [name, g] of groups) checkPairs(r, `groups.${name}`, g, {}, '');
  for (const [name, q] of queues) {
    checkPairs(r, `queues.${name}`, q, {}, '');
    checkPairs(r, `queues.${name}.per_user`, q.perUser, {}, '');
    checkQueueDefaults(r, q, system);
  }
  if (defaultQueue !== undefined && !queues.has(defaultQueue)) {
    const names = [...queues.keys()];
    const guess = suggest(defaultQueue, names);
    const tail = names.length === 0 ? 'no queue is defined under queues' : guess !== undefined ? `did you mean "${guess}"?` : `queues: ${names.join(', ')}`;
    r.fail(defaultQueueNode, `default_queue: "${defaultQueue}" is not a queue; ${tail}`);
  }
  if (defaultQueue === undefined && queues.size === 1) defaultQueue = [...queues.keys()][0];
  if (defaultQueue === undefined && queues.size > 1) {
    r.fail(queuesNode, `queues: ${queues.size} queues are defined but default_queue is not set; name the queue of jobs submitted without -q (one of ${[...queues.keys()].join(', ')})`);
  }

  return freezeConfig({
    source: fileName,
    defaults,
    system,
    users,
    groups,
    queues,
    ...(defaultQueue !== undefined ? { defaultQueue } : {}),
    historyTtlSec,
    resources,
  });
}

/** `resources: [licence_matlab, scratch]`: names as PBS custom resources are written. */
function parseResourceNames(r: Reader, e: Entry): string[] {
  const node = e.value;
  if (node === null || (isScalar(node) && node.value === null)) return [];
  if (!isSeq(node)) r.fail(node, `resources: expected a list of resource names, e.g. [matlab_licence, scratch], got ${describe(node)}`);
  return node.items.map((item) => {
    const n = r.resolve(item);
    const name = n !== null && isScalar(n) ? String(n.value) : '';
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) r.fail(n ?? e.keyNode, `resources: "${name}" is not a resource name (a letter, then letters, digits or _)`);
    return name;
  });
}

/** Reads and parses a quotas file; a missing or unreadable file is a UsageError too. */
export function loadQuotaFile(path: string): QuotaConfig {
  return parseQuotaText(readText(path), path);
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UsageError(`${path}: no such file`, { cause: err });
    throw new UsageError(`${path}: cannot be read: ${errorMessage(err)}`, { cause: err });
  }
}

// --------------------------------------------------------------------- watcher

export interface QuotaWatcherOptions {
  /** The admin config folder (Settings.configDir). */
  dir: string;
  /** Default `quotas.yaml`. */
  fileName?: string;
  /** Quiet time after the last file event before reloading (editors write in several steps). Default 250 ms. */
  debounceMs?: number;
  /** Signal that reloads; default SIGHUP; null installs no handler. */
  signal?: NodeJS.Signals | null;
  /** Watch the folder for changes (default true). SIGHUP and reload() work either way. */
  watch?: boolean;
  /** Called with each configuration applied after start(). */
  onReload?: (cfg: QuotaConfig) => void;
  /** Called when a reload is refused; the previous settings stay in force. */
  onError?: (err: UsageError) => void;
}

/**
 * The configuration in force. start() reads `<dir>/quotas.yaml` (no file: no limits; a broken
 * file: start() throws, so a daemon never starts on settings the admin did not write). After
 * that, SIGHUP or a change in the folder reloads the file; a broken or removed file is
 * reported through onError and the previous settings stay in force.
 */
export class QuotaWatcher {
  readonly path: string;
  private cfg: QuotaConfig = emptyQuotaConfig();
  /** Text of the file in force; undefined while running on built-in defaults. */
  private text: string | undefined;
  private fsWatcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly onSignal = (): void => {
    this.reload();
  };
  private started = false;

  constructor(private readonly o: QuotaWatcherOptions) {
    this.path = join(o.dir, o.fileName ?? QUOTA_FILE_NAME);
  }

  current(): QuotaConfig {
    return this.cfg;
  }

  /** Loads the file and starts listening. Throws UsageError when the file exists and is broken. */
  start(): QuotaConfig {
    if (this.started) return this.cfg;
    const text = this.read();
    if (text !== undefined) {
      this.cfg = parseQuotaText(text, this.path);
      this.text = text;
    }
    this.started = true;
    const signal = this.o.signal === undefined ? 'SIGHUP' : this.o.signal;
    if (signal !== null) process.on(signal, this.onSignal);
    if (this.o.watch !== false) this.watchDir();
    return this.cfg;
  }

  /**
   * Reads the file now. True when the settings in force match the file (new or unchanged);
   * false when it was refused (reported through onError, previous settings kept).
   */
  reload(): boolean {
    return this.apply(true);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.fsWatcher?.close();
    this.fsWatcher = undefined;
    const signal = this.o.signal === undefined ? 'SIGHUP' : this.o.signal;
    if (signal !== null) process.off(signal, this.onSignal);
    this.started = false;
  }

  private apply(explicit: boolean): boolean {
    let text: string | undefined;
    try {
      text = this.read();
    } catch (err) {
      this.report(err as UsageError);
      return false;
    }
    if (text === undefined) {
      if (this.text === undefined) return true; // never had a file: still built-in defaults
      this.report(new UsageError(`${this.path}: the file is gone; keeping the previous settings (write an empty file to drop every limit)`));
      return false;
    }
    if (text === this.text && !explicit) return true;
    try {
      this.cfg = parseQuotaText(text, this.path);
    } catch (err) {
      this.report(err instanceof UsageError ? err : new UsageError(`${this.path}: ${errorMessage(err)}`, { cause: err }));
      return false;
    }
    this.text = text;
    this.o.onReload?.(this.cfg);
    return true;
  }

  private report(err: UsageError): void {
    if (this.o.onError) this.o.onError(err);
  }

  /** The file's text, or undefined when there is no file. */
  private read(): string | undefined {
    try {
      return readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new UsageError(`${this.path}: cannot be read: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Watches the folder, not the file: editors and config managers replace the file by a
   * rename (a new inode a file watch would miss), or swap a symlinked directory.
   */
  private watchDir(): void {
    try {
      this.fsWatcher = watch(this.o.dir, { persistent: false }, () => this.schedule());
      this.fsWatcher.on('error', (err) => this.report(new UsageError(`${this.o.dir}: watching stopped: ${errorMessage(err)}; SIGHUP still reloads`)));
    } catch (err) {
      // No folder (yet): SIGHUP and reload() still work.
      this.fsWatcher = undefined;
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.report(new UsageError(`${this.o.dir}: cannot be watched: ${errorMessage(err)}; SIGHUP still reloads`));
      }
    }
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.apply(false);
    }, this.o.debounceMs ?? 250);
    this.timer.unref();
  }
}
