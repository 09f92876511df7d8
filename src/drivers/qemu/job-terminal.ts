/**
 * An interactive shell in a QEMU clone, through the guest agent alone: a small Python bridge
 * (started with guest-exec, so the image needs nothing new) forks a login shell on a
 * pseudo-terminal, appends everything the terminal prints to ID.out and feeds it what
 * arrives in the FIFO ID.in. The host reads ID.out from an offset and writes keystrokes into
 * ID.in with guest-file calls, one round per client poll.
 */
import { randomBytes } from 'node:crypto';
import { DriverError } from '../../errors.js';
import { AgentError, type AgentClient } from '../../vm/agent.js';
import type { RunningClone } from '../../vm/clones/types.js';
import { readGuestFileAt } from '../../vm/guest-peek.js';
import type { TerminalRound, TerminalSession, TerminalSpec } from '../driver.js';

/**
 * argv: files prefix, account, directory, rows, cols[, command...]. Runs the command (default:
 * the account's login shell) on the terminal; exits with its status. Started as root it takes
 * the account's identity; started as the account (an interactive job, under run-job) it is it.
 */
export const BRIDGE = `
import fcntl, os, pty, pwd, select, struct, sys, termios
d, user, cwd, rows, cols = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
cmd = sys.argv[6:]
pw = pwd.getpwnam(user)
fifo = d + ".in"
try:
    os.unlink(fifo)
except FileNotFoundError:
    pass
os.mkfifo(fifo, 0o600)
fin = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
pid, fd = pty.fork()
if pid == 0:
    sh = pw.pw_shell or "/bin/sh"
    os.environ.update(HOME=pw.pw_dir, USER=user, LOGNAME=user, SHELL=sh)
    for where in (cwd, pw.pw_dir, "/"):
        try:
            os.chdir(where)
            break
        except OSError:
            pass
    if pw.pw_uid != 0 and os.getuid() == 0:
        os.initgroups(user, pw.pw_gid)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    if cmd:
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            sys.stderr.write("%s: %s\\n" % (cmd[0], e.strerror))
            os._exit(127)
    os.execv(sh, ["-" + os.path.basename(sh)])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
out = os.open(d + ".out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
while True:
    r, _, _ = select.select([fd, fin], [], [], 5.0)
    if fd in r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            break
        os.write(out, data)
    if fin in r:
        data = os.read(fin, 65536)
        if data:
            os.write(fd, data)
_, st = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(st)
sys.exit(code if code >= 0 else 128 - code)
`;

/** Bytes of terminal output per round. */
const ROUND_BYTES = 64 * 1024;

export async function openTerminal(c: RunningClone, spec: TerminalSpec): Promise<TerminalSession> {
  const files = `/run/copper/tty-${c.handle.cloneId}-${randomBytes(4).toString('hex')}`;
  const rows = clampSize(spec.rows, 24);
  const cols = clampSize(spec.cols, 80);
  const pid = await c.agent.exec('/usr/bin/python3', ['-c', BRIDGE, files, spec.user, spec.cwd, String(rows), String(cols)], spec.env, null, true);
  let offset = 0;
  let ready = false;
  let pending = Buffer.alloc(0);
  let closed = false;

  const send = (data: Buffer): Promise<void> => typeInto(c.agent, files, data);

  const round = async (input: Buffer): Promise<TerminalRound> => {
    if (closed) throw new DriverError('the terminal session is closed');
    if (c.destroyed) return { output: Buffer.alloc(0), exitCode: 129 };
    const out = await readGuestFileAt(c.agent, `${files}.out`, offset, ROUND_BYTES);
    // ID.out appears once the FIFO is there: only then may keystrokes go in (an open for
    // writing of a FIFO not yet made would create a plain file).
    if (out !== undefined) ready = true;
    pending = Buffer.concat([pending, input]);
    if (ready && pending.length > 0) {
      const data = pending;
      pending = Buffer.alloc(0);
      await send(data);
    }
    const got = out ?? Buffer.alloc(0);
    offset += got.length;
    if (got.length > 0) return { output: got };
    const st = await c.agent.execStatus(pid);
    if (!st.exited) return { output: got };
    // The shell ended: what it printed last, then its status.
    const rest = (await readGuestFileAt(c.agent, `${files}.out`, offset, ROUND_BYTES)) ?? Buffer.alloc(0);
    offset += rest.length;
    const own = st.err?.toString().trim();
    const exitCode = st.signal !== null ? 128 + st.signal : (st.exitCode ?? 1);
    if (exitCode !== 0 && own && !ready) throw new DriverError(`the shell did not start: ${own.split('\n').pop() ?? ''}`);
    await close();
    return { output: rest, exitCode };
  };

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    if (c.destroyed) return;
    // TERM to the bridge closes the terminal: the shell's session gets SIGHUP.
    await c.agent
      .run('/bin/sh', ['-c', 'kill -TERM "$1" 2>/dev/null; rm -f -- "$2.in" "$2.out"', 'sh', String(pid), files], { timeoutMs: 10_000 })
      .catch(() => undefined); // the clone may be going away
  };

  return { round, close };
}

/** Keystrokes into a bridge's FIFO (it holds it open for reading: the open does not block). */
export async function typeInto(agent: AgentClient, files: string, data: Buffer): Promise<void> {
  const h = await agent.fileOpen(`${files}.in`, 'w');
  try {
    let off = 0;
    while (off < data.length) off += await agent.fileWrite(h, data.subarray(off));
  } finally {
    await agent.fileClose(h).catch(() => undefined);
  }
}

/** How many bytes a bridge's terminal has printed so far (0 before it began). */
export async function printedSize(agent: AgentClient, files: string): Promise<number> {
  let h: number;
  try {
    h = await agent.fileOpen(`${files}.out`, 'rb');
  } catch (err) {
    if (err instanceof AgentError) return 0;
    throw err;
  }
  try {
    const r = await agent.request('guest-file-seek', { handle: h, offset: 0, whence: 'end' });
    const pos = (r as { position?: unknown } | undefined)?.position;
    return typeof pos === 'number' && pos >= 0 ? pos : 0;
  } finally {
    await agent.fileClose(h).catch(() => undefined);
  }
}

/** The bridge's argv for a command on a terminal of rows x cols (empty command: a login shell). */
export function bridgeArgs(files: string, user: string, cwd: string, rows: number, cols: number, command: readonly string[]): string[] {
  return ['-c', BRIDGE, files, user, cwd, String(clampSize(rows, 24)), String(clampSize(cols, 80)), ...command];
}

function clampSize(n: number, dflt: number): number {
  return Number.isInteger(n) && n > 0 && n <= 1000 ? n : dflt;
}
