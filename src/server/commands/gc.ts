import { PermissionError, UsageError } from '../../errors.js';
import type { HeadnodeInfo, HeadnodeManager } from '../../headnodes/types.js';

/** An admin's command in a running headnode, as root (gc headnode exec). */
export type HeadnodeExec = (name: string, argv: string[], timeoutMs: number) => Promise<ToolResult>;
import type { Tool, ToolRequest, ToolResult, ToolServices } from './tool.js';
import { parseArgs } from './args.js';
import { readKeyFiles, sshKeyCommand } from './gc-ssh-key.js';
import { mergeSshKeys } from '../../headnodes/ssh-keys.js';
import { quotaCommand } from './gc-quota.js';

function table(rows: HeadnodeInfo[]): string {
  const head = ['NAME', 'OWNER', 'GROUP', 'STATE', 'ACCEL', 'MEM', 'VCPUS', 'DISK', 'SSH', 'NOTE'];
  const ssh = (h: HeadnodeInfo): string => (h.ssh?.port !== undefined ? `${h.ssh.addr ?? ''}:${h.ssh.port}` : '-');
  const body = rows.map((h) => [h.name, h.owner, h.group, h.state, h.accel, `${h.memMiB}M`, String(h.vcpus), `${h.diskGiB}G`, ssh(h), h.reason ?? '']);
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return (
    all
      .map((r) =>
        r
          .map((c, i) => c.padEnd(w[i]))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

interface CreateArgs {
  owner?: string;
  group?: string;
  mem: number;
  vcpus: number;
  'max-vcpus'?: number;
  'max-mem'?: number;
  disk: number;
  image?: string;
  kernel?: string;
  initrd?: string;
  'ssh-key'?: string[];
}

/**
 * `gc headnode create|start|stop|destroy|list`, run by gcd for a thin client. Creating,
 * starting, stopping and destroying headnodes is the administrator's (host socket); a
 * guest may list its own headnode.
 */
export async function gcTool(
  req: ToolRequest,
  _s: ToolServices,
  headnodes: HeadnodeManager,
  exec: HeadnodeExec,
  /** `gc clone|clones|kill|whoami` (src/server/commands/gc-clone.ts), when the backend has clusters. */
  clusters?: { commands: ReadonlySet<string>; tool: Tool },
): Promise<ToolResult> {
  const [group, verb, ...rest] = req.argv;
  if (clusters && group !== undefined && clusters.commands.has(group)) return clusters.tool(req, _s);
  if (group === 'quota') return quotaCommand(req, _s.scheduler.quotaConfig(), () => headnodes.list(), req.argv.slice(1));
  if (group !== 'headnode' && group !== 'headnodes') {
    throw new UsageError(
      `unknown command '${group ?? ''}': try gc headnode create|start|stop|destroy|list, gc quota [USER], gc clone|clones|kill|whoami, gc image build, gc console NAME`,
    );
  }
  const guest = req.actor.kind === 'guest' ? req.actor.identity : undefined;
  if (verb === 'list' || verb === undefined) {
    const all = await headnodes.list();
    return { stdout: table(guest ? all.filter((h) => h.owner === guest.owner) : all), stderr: '', exitCode: 0 };
  }
  if (verb === 'ssh-key') return sshKeyCommand(req, headnodes, rest);
  if (guest) throw new PermissionError(`gc headnode ${verb}: only the administrator (on the host) may do that`);
  if (verb === 'create') {
    const p = await parseArgs<CreateArgs>('gc headnode create', rest, (y) =>
      y
        .usage(
          'gc headnode create NAME --owner USER [--group G] [--mem MiB] [--vcpus N] [--max-vcpus N] [--max-mem MiB] [--disk GiB] [--ssh-key FILE]... [--image QCOW2 [--kernel F --initrd F]]',
        )
        .option('owner', { type: 'string', describe: 'the user the headnode belongs to' })
        .option('group', { type: 'string', describe: "the owner's group (quotas); default: the owner" })
        .option('mem', { type: 'number', default: 512, describe: 'RAM in MiB (clones start with it; memory a job asks above it is hot-plugged)' })
        .option('vcpus', { type: 'number', default: 1 })
        .option('max-vcpus', { type: 'number', describe: 'most vCPUs a job clone may ask for (-l ncpus; hot-plugged); default 8 or --vcpus' })
        .option('max-mem', {
          type: 'number',
          describe: "most RAM in MiB a job clone may ask for (-l mem; hot-plugged); default the host's clone capacity (GC_CAPACITY_MEM_MIB)",
        })
        .option('disk', { type: 'number', default: 4, describe: 'disk size in GiB' })
        .option('image', { type: 'string', describe: 'bring your own qcow2 image' })
        .option('kernel', { type: 'string' })
        .option('initrd', { type: 'string' })
        .option('ssh-key', { type: 'string', array: true, describe: "a file of the owner's SSH public key(s): may log in as root (repeatable)" }),
    );
    if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
    const a = p.args;
    const name = String(a._[0] ?? '');
    if (!name) throw new UsageError('gc headnode create: a NAME is required');
    if (!a.owner) throw new UsageError('gc headnode create: --owner USER is required');
    for (const [k, v] of [
      ['mem', a.mem],
      ['vcpus', a.vcpus],
      ['max-vcpus', a['max-vcpus'] ?? 1],
      ['max-mem', a['max-mem'] ?? 1],
      ['disk', a.disk],
    ] as const) {
      if (!Number.isInteger(v)) throw new UsageError(`--${k} must be a whole number, got ${String(v)}`);
    }
    const keys = readKeyFiles(req, (a['ssh-key'] ?? []).map(String), '--ssh-key');
    if (keys.kind === 'needFile') return { stdout: '', stderr: '', exitCode: 0, needFile: keys.path };
    const sshKeys = mergeSshKeys([], keys.keys);
    const info = await headnodes.create({
      name,
      owner: a.owner,
      group: a.group ?? a.owner,
      memMiB: a.mem,
      vcpus: a.vcpus,
      diskGiB: a.disk,
      ...(a['max-vcpus'] !== undefined ? { maxVcpus: a['max-vcpus'] } : {}),
      ...(a['max-mem'] !== undefined ? { maxMemMiB: a['max-mem'] } : {}),
      ...(a.image ? { image: a.image } : {}),
      ...(a.kernel ? { kernel: a.kernel } : {}),
      ...(a.initrd ? { initrd: a.initrd } : {}),
      ...(sshKeys.length > 0 ? { sshKeys } : {}),
    });
    return { stdout: table([info]), stderr: '', exitCode: 0 };
  }
  const name = rest[0];
  if (!name) throw new UsageError(`gc headnode ${verb}: a NAME is required`);
  if (verb === 'exec') {
    // gc headnode exec NAME [--timeout SEC] -- command args: run as root through the guest agent.
    let i = 1;
    let timeoutSec = 600;
    if (rest[i] === '--timeout') {
      timeoutSec = Number(rest[i + 1]);
      if (!Number.isFinite(timeoutSec) || timeoutSec <= 0) throw new UsageError(`--timeout must be a positive number of seconds`);
      i += 2;
    }
    if (rest[i] === '--') i++;
    const argv = rest.slice(i);
    if (argv.length === 0) throw new UsageError('gc headnode exec NAME -- command [args]: a command is required');
    return exec(name, argv, timeoutSec * 1000);
  }
  switch (verb) {
    case 'start':
      return { stdout: table([await headnodes.start(name)]), stderr: '', exitCode: 0 };
    case 'stop':
      return { stdout: table([await headnodes.stop(name)]), stderr: '', exitCode: 0 };
    case 'destroy':
      await headnodes.destroy(name);
      return { stdout: '', stderr: '', exitCode: 0 };
    default:
      throw new UsageError(`gc headnode: unknown verb '${verb}' (create, start, stop, destroy, list, exec, ssh-key)`);
  }
}
