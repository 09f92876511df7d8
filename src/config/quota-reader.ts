/**
 * Walks the YAML tree of a quotas file and reads each value by its field spec (see schema.ts),
 * failing with a UsageError `file:line: reason` that points at the offending key or value.
 */
import { isAlias, isMap, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';
import { UsageError, errorMessage } from '../errors.js';
import { parseSize, parseWalltime } from '../pbs/units.js';
import { DURATION_TEXT, QUEUE_NAME, SIZE_WITH_UNIT, type FieldSpec } from './schema.js';
import { suggest } from './quota-suggest.js';

export interface Entry {
  key: string;
  keyNode: Node | null;
  value: Node | null;
}

/** Walks the YAML tree, remembering the line of every key so later checks can point at it. */
export class Reader {
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
    const got = typeof v === 'string' ? `"${v}"` : (JSON.stringify(v) ?? 'nothing');
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
  for (const m of text.toLowerCase().matchAll(/(\d+)([smhdw])/g)) total += Number(m[1]) * UNIT_SECONDS[m[2]];
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

export function describe(node: Node | null): string {
  if (node === null) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return 'nothing';
    return typeof v === 'string' ? `"${v}"` : (JSON.stringify(v) ?? 'nothing');
  }
  return 'an unexpected value';
}
