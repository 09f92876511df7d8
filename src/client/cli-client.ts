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
}

const MAX_SCRIPT = 1024 * 1024;

/** `calledAs`: the PBS name (qstat) the tool was run by; its messages then start with that name. */
export async function main(tool: string, argv: string[] = process.argv.slice(2), calledAs: string = tool): Promise<number> {
  const bad = settingProblem();
  if (bad) return (process.stderr.write(`${calledAs}: ${bad.message}\n`), exitCodeOf(bad));
  const settings = loadSettings();
  const cwd = process.cwd();
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  const files: Record<string, string> = {};
  const missing: string[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const body = JSON.stringify({ tool, argv, cwd, env, account: userInfo().username, files, missing });
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
          continue;
        }
        process.stderr.write(`${calledAs}: script file ${answer.needFile}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}\n`);
        return 2;
      }
      continue;
    }
    if (answer.stdout) process.stdout.write(answer.stdout);
    if (answer.stderr) process.stderr.write(calledAs === tool ? answer.stderr : answer.stderr.replaceAll(new RegExp(`^${tool}:`, 'gm'), `${calledAs}:`));
    return answer.exitCode ?? 1;
  }
  process.stderr.write(`${calledAs}: gcd kept asking for files\n`);
  return 2;
}
