/**
 * `gc node token NAME`: mint a node's token for the server's node API (printed once; stored 0600
 * in the state folder). Host administrator only: a guest asking is refused, so no VM can make
 * itself a node.
 */
import type { CliAnswer, CliCall } from '../api/cli-call.js';
import { PermissionError, UsageError } from '../errors.js';
import { checkNodeName, type NodeTokens } from './node-tokens.js';

export async function nodeTokenTool(call: Pick<CliCall, 'actor' | 'argv'>, tokens: NodeTokens): Promise<CliAnswer> {
  // argv: ['node', 'token', NAME] or ['node', 'token', '--revoke', NAME]
  if (call.actor.kind !== 'admin') throw new PermissionError('gc node token: only the host administrator mints node tokens');
  const rest = call.argv.slice(2);
  const revoke = rest[0] === '--revoke';
  const name = revoke ? rest[1] : rest[0];
  if (name === undefined || rest.length !== (revoke ? 2 : 1)) throw new UsageError('usage: gc node token [--revoke] NAME');
  checkNodeName(name);
  if (revoke) {
    await tokens.revoke(name);
    return { stdout: `token of node ${name} revoked\n`, stderr: '', exitCode: 0 };
  }
  const token = await tokens.mint(name);
  return {
    stdout: `${token}\n`,
    stderr: `give it to node ${name} as GC_NODE_TOKEN (an earlier token of ${name} no longer works)\n`,
    exitCode: 0,
  };
}

/** True when a `gc` call is `gc node token ...` (the rest of `gc node` is the registry's). */
export function isNodeTokenCall(argv: readonly string[]): boolean {
  return argv[0] === 'node' && argv[1] === 'token';
}
