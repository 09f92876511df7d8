import { loadSettings } from '../config/settings.js';
import { errorMessage } from '../errors.js';
import { exitCodeOf } from '../api/error-map.js';
import { buildImage, findImage } from '../image/image.js';

const USAGE = `usage: gc image build [--force]   build the default headnode image (cached by recipe)
       gc image path              print the folder of the current image (exit 1 if not built)`;

/** `gc image ...`: returns the exit status; progress and errors go to stderr. */
export async function imageCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [sub, ...rest] = argv;
  const settings = loadSettings(env);
  try {
    if (sub === 'build') {
      const unknown = rest.filter((a) => a !== '--force');
      if (unknown.length > 0) return usage(`unknown option '${unknown[0]}'`);
      const info = await buildImage({ stateDir: settings.stateDir, force: rest.includes('--force'), env });
      process.stdout.write(`${info.dir}\n`);
      return 0;
    }
    if (sub === 'path') {
      if (rest.length > 0) return usage(`unexpected argument '${rest[0]}'`);
      const info = await findImage({ stateDir: settings.stateDir, env });
      if (info === undefined) {
        process.stderr.write('gc image: the headnode image is not built yet; run `gc image build`\n');
        return 1;
      }
      process.stdout.write(`${info.dir}\n`);
      return 0;
    }
    if (sub === undefined || sub === '-h' || sub === '--help') {
      process.stdout.write(`${USAGE}\n`);
      return sub === undefined ? 2 : 0;
    }
    return usage(`unknown subcommand '${sub}'`);
  } catch (err) {
    process.stderr.write(`gc image: ${errorMessage(err)}\n`);
    return exitCodeOf(err);
  }
}

function usage(problem: string): number {
  process.stderr.write(`gc image: ${problem}\n${USAGE}\n`);
  return 2;
}
