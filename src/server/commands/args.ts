import yargs, { type Argv } from 'yargs';
import { UsageError } from '../../errors.js';

/**
 * Parse a tool's argv with yargs, in-process and side-effect free: no printing, no exit.
 * Errors become one-line UsageErrors; --help returns the help text.
 */
export type Parsed<T> = { kind: 'args'; args: T & { _: Array<string | number> } } | { kind: 'help'; help: string };

export async function parseArgs<T>(
  tool: string,
  argv: string[],
  configure: (y: Argv) => Argv<unknown>,
  /** getopt-style grouped flags (`-xs`), for tools whose short options are all single letters. */
  groups = false,
): Promise<Parsed<T>> {
  let failure: string | undefined;
  const y = configure(
    yargs(argv)
      .scriptName(tool)
      .exitProcess(false)
      .strictOptions()
      .help(false)
      .version(false)
      .option('help', { type: 'boolean', describe: 'show help' })
      .parserConfiguration({ 'short-option-groups': groups, 'camel-case-expansion': false })
      .fail((msg, err) => {
        failure = msg || err?.message || 'invalid arguments';
      }),
  );
  const args = (await y.parseAsync()) as unknown as T & { help?: boolean; _: Array<string | number> };
  if (failure) throw new UsageError(failure);
  if (args.help) return { kind: 'help', help: await y.getHelp() };
  return { kind: 'args', args };
}
