/**
 * gcqexec in a QEMU clone: a command run beside the job, through a guest-exec of /bin/sh
 * with the script below, as the job's account, in the job's directory, with its environment.
 * The output is guest-exec's captured output (qga stops capturing at 16 MiB).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DriverError, UsageError } from '../../errors.js';
import type { RunningClone } from '../../vm/clones/types.js';
import type { EnterResult, EnterSpec } from '../driver.js';

/**
 * $1 the directory, $2 the account, then the command. Like run-job: HOME, USER, LOGNAME from
 * the account; the job's directory, else the account's home, else /; setpriv for an account
 * other than root. 126: the account does not exist in the clone.
 */
const ENTER_SH = `cwd=$1 u=$2; shift 2
pw=$(getent passwd "$u") || { echo "gcqexec: no such user '$u' in the clone" >&2; exit 126; }
IFS=: read -r _ _ uid gid _ home _ <<EOF
$pw
EOF
export HOME="$home" USER="$u" LOGNAME="$u"
[ -n "\${PATH:-}" ] || export PATH=/usr/local/bin:/usr/bin:/bin
cd -- "$cwd" 2>/dev/null || cd -- "$home" 2>/dev/null || cd /
[ "$u" = root ] && exec "$@"
exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"`;

export async function enterClone(c: RunningClone, spec: EnterSpec): Promise<EnterResult> {
  if (spec.argv.length === 0) throw new UsageError('no command to run');
  const pid = await c.agent.exec('/bin/sh', ['-c', ENTER_SH, 'sh', spec.cwd, spec.user, ...spec.argv], spec.env, null, true);
  // No deadline of its own: the command lives as long as the clone (a destroyed clone closes
  // the agent, and the status poll throws).
  let wait = 20;
  for (;;) {
    if (c.destroyed) throw new DriverError(`the job's clone '${c.handle.cloneId}' was destroyed while the command ran`);
    const st = await c.agent.execStatus(pid);
    if (st.exited) {
      return { exitCode: st.signal !== null ? null : st.exitCode, signal: st.signal, stdout: st.out ?? Buffer.alloc(0), stderr: st.err ?? Buffer.alloc(0) };
    }
    await sleep(wait);
    wait = Math.min(wait * 1.5, 500);
  }
}
