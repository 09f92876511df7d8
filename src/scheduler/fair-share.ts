/**
 * Fair share: which queued job gets the next free place when cpus are short.
 *
 * Rule (docs/quotas.md, "Fair share"):
 * 1. Queue priority first: jobs of a queue with a higher `priority` go before any job of a
 *    lower one (PBS sorts by queue priority before anything else).
 * 2. Among users with jobs waiting in that tier, the next turn goes to the user with the least
 *    running cpus per share (`runningNcpus / shares`, from Usage): over time each user holds
 *    cpus in proportion to their shares. Ties (e.g. nobody runs anything yet) go to the user
 *    with the least cpus started per share so far (a stride-scheduling "pass"), so even with
 *    instantly finishing jobs the turns follow the shares: 3:1 shares give 3 turns to 1.
 * 3. Within one user: higher job priority (-p) first, then earlier submission, then order of add().
 *
 * Shares: `users.<u>.shares`, else the group's `shares` split equally among the group's members
 * that have jobs waiting (and no shares of their own), else `defaults.shares`, else 1.
 *
 * No long-term memory: a user who comes back after an idle spell starts level with the users
 * who are busy (idle time earns no credit) and past use is not held against anyone (as if
 * usage decayed at once). Fair share therefore only arbitrates between users who are waiting
 * now, which is what keeps one user's 10,000-task array from starving everybody else.
 *
 * Cost: add/remove O(log n); next() O(users waiting in the top tier); pick() simulates next()
 * over a list without touching the live state except reading it.
 */
import type { QuotaConfig } from '../config/quotas.js';
import type { Usage } from './policy.js';

export interface Candidate {
  id: string;
  user: string;
  group: string;
  /** PBS -p, -1024..1023, higher first (within one user). */
  priority: number;
  /** Submission time (ms); earlier first within one user and priority. */
  queuedAt: number;
  /** Cpus the job holds when it runs: its cost in turns. Default 1. */
  ncpus?: number;
  /** Its queue, for the queue priority tier; unknown or absent: priority 0. */
  queue?: string;
}

interface Entry {
  c: Candidate;
  seq: number;
  removed: boolean;
  tier: number;
}

/** Binary min-heap of entries by (priority desc, queuedAt asc, seq asc). */
class JobHeap {
  private readonly a: Entry[] = [];
  live = 0;

  private static before(x: Entry, y: Entry): boolean {
    if (x.c.priority !== y.c.priority) return x.c.priority > y.c.priority;
    if (x.c.queuedAt !== y.c.queuedAt) return x.c.queuedAt < y.c.queuedAt;
    return x.seq < y.seq;
  }

  push(e: Entry): void {
    const a = this.a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!JobHeap.before(a[i] as Entry, a[p] as Entry)) break;
      [a[i], a[p]] = [a[p] as Entry, a[i] as Entry];
      i = p;
    }
    this.live++;
  }

  /** The first live entry (removed ones are dropped on the way). */
  peek(): Entry | undefined {
    while (this.a.length > 0 && (this.a[0] as Entry).removed) this.popRaw();
    return this.a[0];
  }

  /** Removes the head (after peek()). */
  shift(): void {
    if (this.peek()) {
      this.popRaw();
      this.live--;
    }
  }

  all(): Entry[] {
    return this.a.filter((e) => !e.removed);
  }

  private popRaw(): void {
    const a = this.a;
    const last = a.pop() as Entry;
    if (a.length === 0) return;
    a[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && JobHeap.before(a[l] as Entry, a[m] as Entry)) m = l;
      if (r < a.length && JobHeap.before(a[r] as Entry, a[m] as Entry)) m = r;
      if (m === i) break;
      [a[i], a[m]] = [a[m] as Entry, a[i] as Entry];
      i = m;
    }
  }
}

/** Per user, across tiers: the stride-scheduling pass (cpus started per share). */
interface UserState {
  user: string;
  pass: number;
  /** In how many tiers the user has jobs waiting. */
  tiers: number;
}

/** One user's waiting jobs in one tier, with the share cached for the configuration in force. */
interface UserQueue {
  st: UserState;
  /** The group of the user's first job here: whose shares a user without own shares draws on. */
  group: string;
  heap: JobHeap;
  baseShare: number;
  /** True when baseShare is the group's shares, to be split among the group's waiting members. */
  split: boolean;
  /** Position in Tier.list. */
  index: number;
}

/** Jobs of one queue priority. */
interface Tier {
  prio: number;
  users: Map<string, UserQueue>;
  /** The same user queues as an array: the hot loop of next() scans it. */
  list: UserQueue[];
  /** group -> waiting members drawing on the group's shares. */
  splitCounts: Map<string, number>;
}

interface Ranked {
  uq: UserQueue;
  head: Entry;
  load: number;
}

export class FairShare {
  private readonly config: () => QuotaConfig;
  private readonly byId = new Map<string, Entry>();
  private readonly tiers = new Map<number, Tier>();
  /** Tier priorities, highest first. */
  private order: number[] = [];
  private users = new Map<string, UserState>();
  /** The pass of the latest turn: where users who start waiting again join. */
  private vtime = 0;
  private seq = 0;
  private configSeen: QuotaConfig | undefined;

  constructor(config: QuotaConfig | (() => QuotaConfig)) {
    this.config = typeof config === 'function' ? config : () => config;
  }

  get size(): number {
    return this.byId.size;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** Queues a candidate; a second add() of the same id replaces the first. */
  add(c: Candidate): void {
    this.refresh();
    if (this.byId.has(c.id)) this.remove(c.id);
    const e: Entry = { c, seq: this.seq++, removed: false, tier: this.tierOf(c) };
    this.byId.set(c.id, e);
    this.insert(e);
  }

  /** Drops a candidate (deleted, held, started elsewhere). False if it was not there. */
  remove(id: string): boolean {
    const e = this.byId.get(id);
    if (!e) return false;
    this.byId.delete(id);
    e.removed = true;
    const tier = this.tiers.get(e.tier) as Tier;
    const uq = tier.users.get(e.c.user) as UserQueue;
    uq.heap.live--;
    if (uq.heap.live === 0) this.dropUser(tier, uq);
    return true;
  }

  /**
   * Takes the next job to start: the fair choice among the jobs `accept` agrees to (e.g.
   * `c => admit(cfg, usage, ...).ok && capacity fits`). A user whose first job is refused is
   * skipped for this turn (their later jobs do not jump ahead of it); when every user of a
   * queue-priority tier is refused, the next tier is tried. The job is removed and its user
   * charged; undefined when nothing is accepted. Update `usage` (onStarted) before the next call.
   */
  next(usage: Usage, accept?: (c: Candidate) => boolean): Candidate | undefined {
    this.refresh();
    return this.take(usage, accept, undefined);
  }

  /**
   * The order in which these candidates would get their turns, given the live state and
   * `usage` (each pick counted as running from then on). Does not change this instance.
   */
  pick(candidates: readonly Candidate[], usage: Usage): string[] {
    this.refresh();
    const sim = new FairShare(this.config);
    sim.users = new Map([...this.users].map(([u, st]) => [u, { user: u, pass: st.pass, tiers: 0 }]));
    sim.vtime = this.vtime;
    for (const c of candidates) sim.add(c);
    const extra = new Map<string, number>();
    const out: string[] = [];
    for (let c = sim.take(usage, undefined, extra); c; c = sim.take(usage, undefined, extra)) out.push(c.id);
    return out;
  }

  /** Charges a user for `ncpus` started outside next() (a group's shares counted unsplit). */
  charge(user: string, group: string, ncpus = 1): void {
    const st = this.users.get(user);
    const pass = st?.pass ?? this.vtime;
    this.vtime = Math.max(this.vtime, pass);
    const next = pass + ncpus / this.shareOf(user, group, 1);
    if (st) st.pass = next;
    else this.users.set(user, { user, pass: next, tiers: 0 });
  }

  /**
   * A user's fair-share weight: own shares, else the group's shares divided among
   * `activeInGroup` members, else defaults.shares, else 1.
   */
  shareOf(user: string, group: string, activeInGroup: number): number {
    const b = baseShare(this.config(), user, group);
    return b.split ? b.share / Math.max(1, activeInGroup) : b.share;
  }

  // ------------------------------------------------------------------ internals

  private take(usage: Usage, accept: ((c: Candidate) => boolean) | undefined, extra: Map<string, number> | undefined): Candidate | undefined {
    for (const prio of this.order) {
      const tier = this.tiers.get(prio) as Tier;
      // One pass without allocation for the usual case: the best user's first job is accepted.
      let best: Ranked | undefined;
      const list = tier.list;
      for (let i = 0; i < list.length; i++) {
        const uq = list[i] as UserQueue;
        const head = uq.heap.peek();
        if (!head) continue;
        const load = this.loadOf(uq, tier, usage, extra);
        if (best === undefined) {
          best = { uq, head, load };
        } else if (ahead(load, uq, head, best)) {
          best.uq = uq;
          best.head = head;
          best.load = load;
        }
      }
      if (!best) continue;
      if (!accept || accept(best.head.c)) return this.consume(best, tier, extra);
      const refused = best.uq;
      const rest: Ranked[] = [];
      for (const uq of tier.list) {
        const head = uq.heap.peek();
        if (uq !== refused && head) rest.push({ uq, head, load: this.loadOf(uq, tier, usage, extra) });
      }
      rest.sort((x, y) => (ahead(x.load, x.uq, x.head, y) ? -1 : ahead(y.load, y.uq, y.head, x) ? 1 : 0));
      const found = rest.find((r) => accept(r.head.c));
      if (found) return this.consume(found, tier, extra);
    }
    return undefined;
  }

  private shareIn(uq: UserQueue, tier: Tier): number {
    return uq.split ? uq.baseShare / (tier.splitCounts.get(uq.group) ?? 1) : uq.baseShare;
  }

  private loadOf(uq: UserQueue, tier: Tier, usage: Usage, extra: Map<string, number> | undefined): number {
    const user = uq.st.user;
    const running = (usage.users.get(user)?.runningNcpus ?? 0) + (extra === undefined ? 0 : (extra.get(user) ?? 0));
    return running === 0 ? 0 : running / this.shareIn(uq, tier);
  }

  private consume(r: Ranked, tier: Tier, extra: Map<string, number> | undefined): Candidate {
    const { uq, head } = r;
    const c = head.c;
    const ncpus = c.ncpus ?? 1;
    this.vtime = Math.max(this.vtime, uq.st.pass);
    uq.st.pass += ncpus / this.shareIn(uq, tier);
    uq.heap.shift();
    this.byId.delete(c.id);
    if (extra) extra.set(uq.st.user, (extra.get(uq.st.user) ?? 0) + ncpus);
    if (uq.heap.live === 0) this.dropUser(tier, uq);
    return c;
  }

  private tierOf(c: Candidate): number {
    return this.config().queues.get(c.queue ?? '')?.priority ?? 0;
  }

  private insert(e: Entry): void {
    let tier = this.tiers.get(e.tier);
    if (!tier) {
      tier = { prio: e.tier, users: new Map(), list: [], splitCounts: new Map() };
      this.tiers.set(e.tier, tier);
      this.order = [...this.tiers.keys()].sort((a, b) => b - a);
    }
    let uq = tier.users.get(e.c.user);
    if (!uq) {
      let st = this.users.get(e.c.user);
      if (!st) this.users.set(e.c.user, (st = { user: e.c.user, pass: this.vtime, tiers: 0 }));
      // Idle time earns no credit: a user who starts waiting joins at the current virtual time.
      if (st.tiers === 0) st.pass = Math.max(st.pass, this.vtime);
      st.tiers++;
      const b = baseShare(this.config(), e.c.user, e.c.group);
      uq = { st, group: e.c.group, heap: new JobHeap(), baseShare: b.share, split: b.split, index: tier.list.length };
      tier.users.set(e.c.user, uq);
      tier.list.push(uq);
      if (uq.split) tier.splitCounts.set(uq.group, (tier.splitCounts.get(uq.group) ?? 0) + 1);
    }
    uq.heap.push(e);
  }

  private dropUser(tier: Tier, uq: UserQueue): void {
    tier.users.delete(uq.st.user);
    const last = tier.list.pop() as UserQueue;
    if (last !== uq) {
      tier.list[uq.index] = last;
      last.index = uq.index;
    }
    if (uq.split) {
      const n = (tier.splitCounts.get(uq.group) ?? 1) - 1;
      if (n > 0) tier.splitCounts.set(uq.group, n);
      else tier.splitCounts.delete(uq.group);
    }
    if (tier.users.size === 0) {
      this.tiers.delete(tier.prio);
      this.order = this.order.filter((p) => p !== tier.prio);
    }
    uq.st.tiers--;
    // A user no longer waiting and not ahead of the others needs no memory.
    if (uq.st.tiers === 0 && uq.st.pass <= this.vtime) this.users.delete(uq.st.user);
  }

  /** After a config reload: shares may have changed, and queue priorities (re-bucket every waiting job). */
  private refresh(): void {
    const cfg = this.config();
    if (cfg === this.configSeen) return;
    this.configSeen = cfg;
    if (this.byId.size === 0) return;
    const entries = [...this.byId.values()].sort((a, b) => a.seq - b.seq);
    for (const t of this.tiers.values()) for (const uq of t.users.values()) uq.st.tiers = 0;
    this.tiers.clear();
    this.order = [];
    for (const e of entries) {
      e.tier = this.tierOf(e.c);
      this.insert(e);
    }
  }
}

function baseShare(cfg: QuotaConfig, user: string, group: string): { share: number; split: boolean } {
  const own = cfg.users.get(user)?.shares;
  if (own !== undefined) return { share: own, split: false };
  const g = cfg.groups.get(group)?.shares;
  if (g !== undefined) return { share: g, split: true };
  return { share: cfg.defaults.shares ?? 1, split: false };
}

/** Least running cpus per share first, then least started per share, then the earlier job. */
function ahead(load: number, uq: UserQueue, head: Entry, than: Ranked): boolean {
  if (load !== than.load) return load < than.load;
  if (uq.st.pass !== than.uq.st.pass) return uq.st.pass < than.uq.st.pass;
  if (head.c.priority !== than.head.c.priority) return head.c.priority > than.head.c.priority;
  if (head.c.queuedAt !== than.head.c.queuedAt) return head.c.queuedAt < than.head.c.queuedAt;
  return head.seq < than.head.seq;
}
