import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One message as the SMTP server received it, with its headers and body decoded enough to read. */
export interface ReceivedMail {
  from: string;
  to: string[];
  subject: string;
  body: string;
  raw: string;
}

/** Undo quoted-printable (soft breaks, =XX) so a test can read a long line whole. */
function decodeQuotedPrintable(s: string): string {
  const bytes = s.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

function parse(rec: { from: string; to: string[]; data: string }): ReceivedMail {
  const raw = rec.data.replace(/\r\n/g, '\n');
  const cut = raw.indexOf('\n\n');
  const head = raw.slice(0, cut).replace(/\n[ \t]+/g, ' ');
  const header = (name: string): string => new RegExp(`^${name}:\\s*(.*)$`, 'mi').exec(head)?.[1] ?? '';
  let body = raw.slice(cut + 2);
  if (/quoted-printable/i.test(header('Content-Transfer-Encoding'))) body = decodeQuotedPrintable(body);
  if (/base64/i.test(header('Content-Transfer-Encoding'))) body = Buffer.from(body, 'base64').toString('utf8');
  return { from: rec.from, to: rec.to, subject: header('Subject'), body, raw };
}

/** A real SMTP server process (smtp-server) on 127.0.0.1 that keeps every message it receives. */
export class SmtpRecorder {
  readonly messages: ReceivedMail[] = [];
  port = 0;
  private proc: ChildProcess | undefined;

  static async start(opts: { delayMs?: number } = {}): Promise<SmtpRecorder> {
    const r = new SmtpRecorder();
    const main = join(dirname(fileURLToPath(import.meta.url)), 'smtp-recorder-main.js');
    const proc = spawn(process.execPath, [main, '0'], {
      env: { ...process.env, SMTP_DELAY_MS: String(opts.delayMs ?? 0) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    r.proc = proc;
    let buf = '';
    await new Promise<void>((resolve, reject) => {
      proc.once('exit', (c) => reject(new Error(`SMTP test server exited (${c})`)));
      proc.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const m = /^listening (\d+)$/.exec(line);
          if (m) {
            r.port = Number(m[1]);
            resolve();
          } else if (line.startsWith('{')) r.messages.push(parse(JSON.parse(line) as { from: string; to: string[]; data: string }));
        }
      });
    });
    return r;
  }

  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  /** Messages whose subject mentions this job id. */
  about(jobId: string): ReceivedMail[] {
    return this.messages.filter((m) => m.subject.includes(`JOB ${jobId} `));
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await gone;
  }
}

/** A loopback port nothing listens on (taken, then let go): an SMTP relay that is down. */
export async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const addr = s.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  await new Promise((r) => s.close(r));
  return port;
}
