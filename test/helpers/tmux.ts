import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A command on a real terminal: a detached tmux session on its own server socket, typed into
 * with send-keys and read with capture-pane (what a user would see).
 */
export class TmuxTerminal {
  private readonly sock: string;

  constructor(
    readonly name: string,
    command: string,
    size: { cols: number; rows: number } = { cols: 120, rows: 30 },
  ) {
    this.sock = `copper-${name}-${process.pid}`;
    const r = this.tmux('new-session', '-d', '-s', name, '-x', String(size.cols), '-y', String(size.rows), command);
    if (r.status !== 0) throw new Error(`tmux new-session: ${r.stderr}`);
  }

  private tmux(...args: string[]): { status: number | null; stdout: string; stderr: string } {
    return spawnSync('tmux', ['-L', this.sock, ...args], { encoding: 'utf8' });
  }

  /** The screen and its scrollback, as text. */
  screen(): string {
    return this.tmux('capture-pane', '-p', '-S', '-200', '-t', this.name).stdout;
  }

  /** Keys as tmux names them ('Enter', 'C-c') or literal text. */
  keys(...keys: string[]): void {
    this.tmux('send-keys', '-t', this.name, ...keys);
  }

  /** End the terminal: its programs get SIGHUP (a dropped connection). */
  kill(): void {
    this.tmux('kill-server');
    // kill-server leaves its socket file behind.
    rmSync(join(process.env.TMUX_TMPDIR ?? '/tmp', `tmux-${process.getuid?.() ?? 0}`, this.sock), { force: true });
  }
}
