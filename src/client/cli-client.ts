import { exitCodeOf } from '../api/error-map.js';
import { readFileSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { settingProblem, settings as loadSettings } from '../config/settings.js';
import { httpCall } from './http.js';

/**
 * The host's thin client: every tool sends its argv to gcd's admin socket and prints what
 * comes back, so host and guest tools share one parser and one behaviour. Deliberately
 * imports nothing heavy: gcqsub's cold start is node's own start plus one request.
 */
interface CliAnswer {
  stdout?: string;
  stderr?: string;
  exitCode?: number;
  needFile?: string;
  error?: string;
  more?: { cursor?: unknown; waitMs?: unknown };
  terminal?: boolean;
  interruptible?: boolean;
}

/** Longest pause gcd may ask for between the rounds of a continued answer (gcqpeek -f). */
const MAX_MORE_WAIT_MS = 10_000;

const MAX_SCRIPT = 1024 * 1024;
const MAX_FILE_ROUNDS = 12;

/** `calledAs`: the PBS name (qstat) the tool was run by; its messages then start with that name. */
export async function main(tool: string, argv: string[] = process.argv.slice(2), calledAs: string = tool): Promise<number> {
  const term: { keys?: TerminalKeys } = {};
  const ctrlC = new CtrlC();
  try {
    return await call(tool, argv, calledAs, term, ctrlC);
  } finally {
    ctrlC.stop();
    term.keys?.restore();
  }
}

/**
 * Ctrl-C while gcd said the rounds may be interrupted (gcqsub -I waiting for its job): the next
 * round goes at once and says so. Otherwise Ctrl-C ends the client, as it would by default.
 */
class CtrlC {
  interruptible = false;
  pressed = false;
  private wake: (() => void) | undefined;
  private readonly onSigint = (): void => {
    if (!this.interruptible) process.exit(130);
    this.pressed = true;
    this.wake?.();
  };
  private listening = false;

  allow(on: boolean): void {
    this.interruptible = on;
    if (on && !this.listening) {
      process.on('SIGINT', this.onSigint);
      this.listening = true;
    }
  }

  /** Wait ms, or less when Ctrl-C is pressed. */
  wait(ms: number): Promise<void> {
    if (this.pressed) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
    });
  }

  stop(): void {
    if (this.listening) process.off('SIGINT', this.onSigint);
    this.listening = false;
  }
}

async function call(tool: string, argv: string[], calledAs: string, term: { keys?: TerminalKeys }, ctrlC: CtrlC): Promise<number> {
  const bad = settingProblem();
  if (bad) return (process.stderr.write(`${calledAs}: ${bad.message}\n`), exitCodeOf(bad));
  const settings = loadSettings();
  const cwd = process.cwd();
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  const files: Record<string, string> = {};
  const missing: string[] = [];
  let cursor: string | undefined;
  // A terminal session (gcqexec ID alone) only from a terminal: its size goes with the call.
  const tty = process.stdin.isTTY && process.stdout.isTTY ? { rows: process.stdout.rows, cols: process.stdout.columns } : undefined;
  // One file per round (a script, or each --ssh-key file): a few rounds, never endless.
  for (let attempt = 0; attempt < MAX_FILE_ROUNDS;) {
    const input = term.keys?.take();
    const interrupt = ctrlC.pressed && ctrlC.interruptible;
    if (interrupt) ctrlC.allow(false); // once: a second Ctrl-C ends the client
    const extra = {
      ...(cursor !== undefined ? { cursor } : {}),
      ...(tty ? { terminal: tty } : {}),
      ...(input ? { input } : {}),
      ...(interrupt ? { interrupt: true } : {}),
    };
    const body = JSON.stringify({ tool, argv, cwd, env, account: userInfo().username, files, missing, ...extra });
    let answer: CliAnswer;
    try {
      const r = await httpCall({ socketPath: settings.socketPath }, 'POST', '/v1/cli', body);
      answer = JSON.parse(r.text) as CliAnswer;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' || code === 'ECONNREFUSED' ? 'is gcd running? start it with `gcd`' : (e as Error).message;
      process.stderr.write(`${calledAs}: cannot reach gcd at ${settings.socketPath}: ${why}\n`);
      return 3;
    }
    if (answer.error) {
      process.stderr.write(`${calledAs}: ${answer.error}\n`);
      return 2;
    }
    if (answer.needFile === '-') {
      // gcqsub with no script operand: the script is standard input, unless it is a terminal.
      if (process.stdin.isTTY || missing.includes('-')) missing.push('-');
      else files['-'] = readFileSync(0, 'utf8');
      continue;
    }
    if (answer.needFile) {
      const p = isAbsolute(answer.needFile) ? answer.needFile : join(cwd, answer.needFile);
      try {
        if (statSync(p).size > MAX_SCRIPT) throw new Error(`larger than ${MAX_SCRIPT} bytes`);
        files[answer.needFile] = readFileSync(p, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !missing.includes(answer.needFile)) {
          missing.push(answer.needFile); // gcd decides: a command name, or a missing script
          attempt++;
          continue;
        }
        process.stderr.write(
          `${calledAs}: script file ${answer.needFile}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}\n`,
        );
        return 2;
      }
      attempt++;
      continue;
    }
    if (!answer.more && term.keys) {
      // The session is over: the terminal leaves raw mode before the last lines are printed.
      term.keys.restore();
      term.keys = undefined;
    }
    if (answer.stdout) process.stdout.write(answer.stdout);
    if (answer.stderr) process.stderr.write(calledAs === tool ? answer.stderr : answer.stderr.replaceAll(new RegExp(`^${tool}:`, 'gm'), `${calledAs}:`));
    if (answer.more && typeof answer.more.cursor === 'string') {
      // More rounds follow (gcqpeek -f, a terminal session): print as it comes, ask again with the cursor.
      cursor = answer.more.cursor;
      if (answer.terminal && tty && !term.keys) term.keys = new TerminalKeys();
      if (!ctrlC.pressed) ctrlC.allow(answer.interruptible === true);
      const wait = typeof answer.more.waitMs === 'number' ? Math.min(Math.max(answer.more.waitMs, 0), MAX_MORE_WAIT_MS) : 0;
      if (wait > 0) await (term.keys ? term.keys.wait(wait) : ctrlC.wait(wait));
      continue;
    }
    return answer.exitCode ?? 1;
  }
  process.stderr.write(`${calledAs}: gcd kept asking for files\n`);
  return 2;
}

/** The client's terminal in raw mode during a session: keystrokes gathered between rounds. */
class TerminalKeys {
  private buf: Buffer[] = [];
  private wake: (() => void) | undefined;
  private readonly onData = (d: Buffer): void => {
    this.buf.push(d);
    this.wake?.();
  };

  constructor() {
    process.stdin.setRawMode(true);
    process.stdin.on('data', this.onData);
    process.stdin.resume();
  }

  /** The keystrokes since the last call, base64 (undefined: none). */
  take(): string | undefined {
    if (this.buf.length === 0) return undefined;
    const b = Buffer.concat(this.buf);
    this.buf = [];
    return b.toString('base64');
  }

  /** Wait ms, or less when a key is typed. */
  wait(ms: number): Promise<void> {
    if (this.buf.length > 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wake = done;
    });
  }

  restore(): void {
    process.stdin.off('data', this.onData);
    process.stdin.setRawMode(false);
    process.stdin.pause();
  }
}
