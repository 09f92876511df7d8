/**
 * Contradictions in a parsed quotas file (a limit that can never be met, a queue default above
 * its maximum), each reported at the line of the key that makes it.
 */
import { formatLimit, type Limits, type QueueConfig, type SystemLimits } from './quota-types.js';
import type { Reader } from './quota-reader.js';
import { DEFAULTS_FIELDS, QUEUE_FIELDS, TOP_FIELDS } from './schema.js';

type LimitProp = keyof Limits;

/** Pairs (small, big): small above big can never be satisfied. */
const PAIRS: readonly { small: LimitProp; big: LimitProp; kind: 'count' | 'size'; why: string }[] = [
  { small: 'maxRunning', big: 'maxQueued', kind: 'count', why: 'a running job counts as queued too' },
  { small: 'maxJobNcpus', big: 'maxRunningNcpus', kind: 'count', why: 'such a job could never start' },
  { small: 'maxJobMemMiB', big: 'maxRunningMemMiB', kind: 'size', why: 'such a job could never start' },
];

const KEY_OF: Record<string, string> = Object.fromEntries([...QUEUE_FIELDS, ...DEFAULTS_FIELDS, ...TOP_FIELDS].map((f) => [f.prop, f.key]));

/**
 * `own` is what the entity sets itself, `inherited` what it falls back to (defaults for a user).
 * Reports only when the entity itself sets one side (otherwise the other entity is reported).
 */
export function checkPairs(r: Reader, path: string, own: Limits, inherited: Limits, inheritedFrom: string): void {
  for (const p of PAIRS) {
    const ownSmall = own[p.small];
    const ownBig = own[p.big];
    if (ownSmall === undefined && ownBig === undefined) continue;
    const small = ownSmall ?? inherited[p.small];
    const big = ownBig ?? inherited[p.big];
    if (small === undefined || big === undefined || small <= big) continue;
    const sk = KEY_OF[p.small];
    const bk = KEY_OF[p.big];
    const from = (v: number | undefined): string => (v === undefined ? ` (from ${inheritedFrom})` : '');
    const line = r.lines.get(`${path}.${ownSmall !== undefined ? sk : bk}`) ?? 1;
    r.failAt(line, `${path}: ${sk}=${formatLimit(p.kind, small)}${from(ownSmall)} is above ${bk}=${formatLimit(p.kind, big)}${from(ownBig)}; ${p.why}`);
  }
}

export function checkQueueDefaults(r: Reader, q: QueueConfig, system: SystemLimits): void {
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
