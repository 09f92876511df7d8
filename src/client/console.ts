import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import type { Settings } from '../config/settings.js';
import { Layout, assertId } from '../vm/layout.js';

/**
 * `gc console NAME` (alias `gc ssh NAME`): attach this terminal to the headnode's serial
 * console, where a root shell waits. Access is the console socket's: root on the host.
 * Ctrl-] detaches. Without a terminal (a script), lines from stdin are sent as typed.
 */
export async function consoleCommand(settings: Settings, name: string | undefined): Promise<number> {
  if (!name) {
    process.stderr.write('gc console: usage: gc console HEADNODE (Ctrl-] to detach)\n');
    return 2;
  }
  try {
    assertId('headnode', name);
  } catch (e) {
    process.stderr.write(`gc console: ${(e as Error).message}\n`);
    return 2;
  }
  const path = new Layout(settings).headnode(name).console;
  if (!existsSync(path)) {
    process.stderr.write(`gc console: headnode ${name} is not running (no console at ${path})\n`);
    return 1;
  }
  return new Promise<number>((resolve) => {
    const sock = connect(path);
    const tty = process.stdin.isTTY;
    const done = (code: number): void => {
      if (tty) process.stdin.setRawMode(false);
      process.stdin.pause();
      sock.destroy();
      resolve(code);
    };
    sock.on('error', (e) => {
      process.stderr.write(`gc console: ${e.message}\n`);
      done(1);
    });
    sock.on('connect', () => {
      if (tty) {
        process.stderr.write(`Connected to ${name}'s console. Ctrl-] to detach.\r\n`);
        process.stdin.setRawMode(true);
      }
      sock.write('\n');
      process.stdin.on('data', (d: Buffer) => {
        if (tty && d.includes(0x1d)) return done(0);
        sock.write(d);
      });
      // Scripted use (stdin not a terminal): after the last line, leave once the console has
      // been quiet for a moment, so slow commands (TCG) still get their output printed.
      let idle: NodeJS.Timeout | undefined;
      const settle = (): void => {
        if (idle) clearTimeout(idle);
        idle = setTimeout(() => done(0), 2000);
      };
      process.stdin.on('end', () => {
        settle();
        sock.on('data', settle);
        setTimeout(() => done(0), 30_000).unref();
      });
      process.stdin.resume();
    });
    sock.on('data', (d) => process.stdout.write(d));
    sock.on('close', () => done(0));
  });
}
