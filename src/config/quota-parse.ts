/**
 * Parsing a quotas file: `parseQuotaText` turns the text into a `QuotaConfig` or refuses it
 * whole with a UsageError whose one-line message is `file:line: reason` (YAML syntax, an
 * unknown key with a did-you-mean, a wrong type, a bad size or duration, contradictions).
 */
import { readFileSync } from 'node:fs';
import { LineCounter, isScalar, isSeq, parseDocument, type Node } from 'yaml';
import { UsageError, errorMessage } from '../errors.js';
import { checkPairs, checkQueueDefaults } from './quota-checks.js';
import { Reader, describe, type Entry } from './quota-reader.js';
import { suggest } from './quota-suggest.js';
import { freezeConfig, type EntityLimits, type Limits, type QueueConfig, type QuotaConfig, type SystemLimits } from './quota-types.js';
import {
  DEFAULTS_FIELDS,
  DEFAULT_HISTORY_TTL_SEC,
  ENTITY_NAME,
  GROUP_FIELDS,
  PER_USER_FIELDS,
  QUEUE_FIELDS,
  QUEUE_NAME,
  SYSTEM_FIELDS,
  TOP_FIELDS,
  TOP_KEYS,
  USER_FIELDS,
  type FieldSpec,
} from './schema.js';

const RESERVED: Record<string, string> = {
  PBS_GENERIC: 'write the default user\'s limits under "defaults:"',
  PBS_ALL: 'write the limits of the whole system under "system:"',
};

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
        defaults = r.fields(e.value, 'defaults', DEFAULTS_FIELDS, e.keyNode);
        break;
      case 'system':
        system = r.fields(e.value, 'system', SYSTEM_FIELDS, e.keyNode);
        break;
      case 'users':
        named(e, 'user', ENTITY_NAME, (name, n) => users.set(name, r.fields(n.value, `users.${name}`, USER_FIELDS, n.keyNode)));
        break;
      case 'groups':
        named(e, 'group', ENTITY_NAME, (name, n) => groups.set(name, r.fields(n.value, `groups.${name}`, GROUP_FIELDS, n.keyNode)));
        break;
      case 'queues':
        queuesNode = e.keyNode;
        named(e, 'queue', QUEUE_NAME, (name, n) => {
          let perUser: Limits = {};
          const own = r.fields(n.value, `queues.${name}`, QUEUE_FIELDS, n.keyNode, {
            per_user: (p, path) => {
              perUser = r.fields(p.value, path, PER_USER_FIELDS, p.keyNode);
            },
          });
          queues.set(name, { enabled: true, started: true, priority: 0, ...own, name, perUser });
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
    r.fail(
      queuesNode,
      `queues: ${queues.size} queues are defined but default_queue is not set; name the queue of jobs submitted without -q (one of ${[...queues.keys()].join(', ')})`,
    );
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
