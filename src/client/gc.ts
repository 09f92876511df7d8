import { fileURLToPath } from 'node:url';
import { exitCodeOf } from '../api/error-map.js';
import { loadSettings, settingProblem } from '../config/settings.js';
import { main as client } from './cli-client.js';
import { consoleCommand } from './console.js';
import { imageCommand } from './image-cmd.js';
import { installPbsNamesCommand } from './pbs-names.js';
import { UsageError } from '../errors.js';

/**
 * `gc`: the headnode and cluster tool. `gc image ...` and `gc console` act on this host
 * directly; everything else (headnode create/start/stop/destroy/list, ...) goes to gcd.
 */
export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const bad = settingProblem();
  if (bad) return (process.stderr.write(`gc: ${bad.message}\n`), exitCodeOf(bad));
  if (sub === 'image') return imageCommand(rest);
  if (sub === 'console' || sub === 'ssh') return consoleCommand(loadSettings(), rest[0]);
  if (sub === 'install-pbs-names') {
    try {
      return installPbsNamesCommand(rest, fileURLToPath(new URL('./cli-client.js', import.meta.url)));
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      process.stderr.write(`gc: ${e.message}\n`);
      return exitCodeOf(e);
    }
  }
  if (sub === undefined || sub === '--help' || sub === 'help') {
    process.stdout.write(
      [
        'gc image build [--force] | gc image path        build / locate the default headnode image',
        'gc headnode create NAME --owner U [--group G] [--mem MiB] [--vcpus N] [--max-vcpus N] [--max-mem MiB] [--disk GiB] [--ssh-key F]... [--image F]',
        'gc headnode start|stop|destroy NAME | gc headnode list',
        "gc headnode ssh-key add|remove|list NAME [FILE]   the owner's SSH keys (create takes --ssh-key FILE too)",
        'gc headnode exec NAME [--timeout SEC] -- CMD...  run a command as root in the headnode (admin)',
        "gc quota [USER]                                  byte quotas and their use: headnode disks (in a headnode: its owner's)",
        "gc console NAME (or gc ssh NAME)                 a root shell on the headnode's console",
        'gc clone N [--ttl DUR]                           fork this VM into N live clones (in a headnode; --headnode NAME on the host)',
        "gc clones | gc kill ID...|--generation G|--all   list / kill this headnode's clones; gc whoami: what this VM is",
        'gc web token [--user U] [--admin] [--ttl DUR]    a log-in link for the web dashboard (in a headnode: its owner)',
        'gc nodes [-a] [--json]                           the compute hosts: state, jobs, cores and memory used/total, snapshot cache',
        'gc node offline|online|drain NAME [-C comment]   take a host out of (or back into) service; running jobs finish (admin)',
        'gc node delete NAME                              forget a host that is down for good (admin)',
        "gc install-pbs-names [--prefix DIR] [--remove]   qsub, qstat, qdel, qselect, qhold, qrls, qalter running Copper's tools",
        '',
      ].join('\n'),
    );
    return 0;
  }
  return client('gc', argv);
}
