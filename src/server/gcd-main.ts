import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadSettings, type Settings } from '../config/settings.js';
import { acquireLock } from './lock.js';
import { composeGcd } from './compose.js';
import { composeNode } from '../grid/node-role.js';
import { CopperError, errorMessage } from '../errors.js';
import { exitCodeOf } from '../api/error-map.js';
import { log } from '../log.js';
import { parseArgs } from './commands/args.js';

/**
 * gcd's process entry: parses argv, takes the state folder's lock and runs what
 * compose.ts assembles (Redis unless GC_REDIS_URL, the scheduler, the headnodes, the API). One per
 * state folder. SIGTERM/SIGINT stop it cleanly: running jobs' clones are destroyed and the
 * jobs requeued (or ended, if -r n); headnodes keep running and are re-attached next start.
 */
export async function main(argv: string[]): Promise<number> {
  let settings: Settings;
  let asNode: boolean;
  try {
    const p = await parseArgs<{ 'state-dir'?: string; node?: boolean }>('gcd', argv, (y) =>
      y
        .usage('gcd [--state-dir DIR] [--node]: run the Copper daemon in the foreground')
        .option('state-dir', { type: 'string', describe: 'state folder (GC_STATE_DIR)' })
        .option('node', { type: 'boolean', describe: "a compute host of the grid: runs jobs from the server's Redis (GC_REDIS_URL), nothing else" }),
    );
    if (p.kind === 'help') {
      process.stdout.write(p.help + '\n');
      return 0;
    }
    const stateDir = p.args['state-dir'];
    settings = loadSettings(stateDir ? { ...process.env, GC_STATE_DIR: stateDir } : process.env);
    asNode = p.args.node === true;
  } catch (e) {
    process.stderr.write(`gcd: ${errorMessage(e)}\n`);
    return 2;
  }
  try {
    return await run(settings, asNode);
  } catch (e) {
    process.stderr.write(`gcd: ${errorMessage(e).split('\n')[0]}\n`);
    if (!(e instanceof CopperError)) log.error('gcd failed', { stack: (e as Error).stack });
    return exitCodeOf(e);
  }
}

async function run(settings: Settings, asNode: boolean): Promise<number> {
  mkdirSync(settings.stateDir, { recursive: true, mode: 0o755 });
  const unlock = acquireLock(join(settings.stateDir, 'gcd.pid'), settings.stateDir);
  try {
    const gcd = asNode ? await composeNode(settings) : await composeGcd(settings);
    if ('backend' in gcd) log.info('gcd ready', { stateDir: settings.stateDir, driver: gcd.backend.driver.name, redis: gcd.redis, pid: process.pid });
    else log.info('gcd ready', { role: 'node', node: settings.nodeName, stateDir: settings.stateDir, driver: gcd.driver.name, pid: process.pid });
    await new Promise<void>((resolve) => {
      const stop = (sig: string): void => {
        log.info('gcd stopping', { signal: sig });
        resolve();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    // Every guest step of the shutdown has its own deadline; this bounds the sum, so that no
    // guest can keep gcd from exiting. Job clones die with gcd (pdeathsig) and the next start
    // recovers their jobs.
    const boundMs = settings.killDelayMs + settings.guestDeadlineMs + 60_000;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), boundMs)));
    const how = await Promise.race([gcd.close().then(() => 'closed' as const), late]);
    clearTimeout(timer);
    if (how === 'late') {
      log.error('gcd shutdown did not finish in time: exiting anyway', { boundMs });
      return 1;
    }
    return 0;
  } finally {
    unlock();
  }
}
