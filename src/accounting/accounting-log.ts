import { createReadStream } from 'node:fs';
import { appendFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { JobTransition, LifecycleListener } from '../lifecycle/listener.js';
import { accountingFileName, accountingLine, parseAccountingLine, type AccountingLine, type AccountingType } from './record-format.js';

/** Which records a lifecycle event writes: a deleted or aborted job that had started also gets its E. */
export function recordTypes(t: JobTransition): AccountingType[] {
  const ran = t.record.startedAt !== undefined;
  switch (t.event) {
    case 'queued':
      return ['Q'];
    case 'started':
      return ['S'];
    case 'ended':
      return ['E'];
    case 'rerun':
      return ['R'];
    case 'deleted':
      return ran ? ['D', 'E'] : ['D'];
    case 'aborted':
      return ran ? ['A', 'E'] : ['A'];
  }
}

/**
 * PBS's accounting log: `<dir>/YYYYMMDD`, one line per event, appended as jobs move. It is
 * kept after the job's Redis history expires (admins rotate or delete the files), and PBS's
 * own readers (pbs-report, sacct-like scripts) parse it.
 */
export class AccountingLog implements LifecycleListener {
  readonly name = 'accounting';
  /** Appends in order, one at a time: lines of one job never interleave out of order. */
  private chain: Promise<void> = Promise.resolve();
  private made = false;

  constructor(readonly dir: string) {}

  onTransition(t: JobTransition): Promise<void> {
    const next = this.chain.then(async () => {
      let types = recordTypes(t);
      if (t.replay) {
        // Told again after a crash: write only the records this job does not have yet.
        const have = new Set((await new AccountingReader(this.dir).recordsOf(t.jobId)).map((r) => r.type));
        types = types.filter((x) => !have.has(x));
      }
      if (types.length)
        await this.append(
          t.at,
          types.map((type) => accountingLine(type, t.record, t.at, t.requestor)),
        );
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async append(atMs: number, lines: string[]): Promise<void> {
    if (!this.made) {
      await mkdir(this.dir, { recursive: true, mode: 0o750 });
      this.made = true;
    }
    await appendFile(join(this.dir, accountingFileName(atMs)), lines.map((l) => l + '\n').join(''), { mode: 0o640 });
  }

  /** Wait for the appends already asked for (tests, shutdown). */
  flush(): Promise<void> {
    return this.chain;
  }
}

/** Reads a job's records back from the day files, oldest first. */
export class AccountingReader {
  constructor(readonly dir: string) {}

  /** Day files, oldest first; `days` keeps only the last N of them (tracejob -n). */
  async files(days?: number): Promise<string[]> {
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((n) => /^\d{8}$/.test(n)).sort();
    return days !== undefined ? names.slice(-days) : names;
  }

  async recordsOf(jobId: string, days?: number): Promise<AccountingLine[]> {
    const needle = `;${jobId};`;
    const out: AccountingLine[] = [];
    for (const name of await this.files(days)) {
      const rl = createInterface({ input: createReadStream(join(this.dir, name)), crlfDelay: Infinity });
      for await (const line of rl) {
        if (!line.includes(needle)) continue;
        const rec = parseAccountingLine(line);
        if (rec && rec.jobId === jobId) out.push(rec);
      }
    }
    return out;
  }
}
