import { expect } from 'chai';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CliCall } from '../../src/api/cli-call.js';
import { PermissionError, UsageError } from '../../src/errors.js';
import type { Actor } from '../../src/scheduler/actor.js';
import { BadTokenError, loadWebSecret, WebTokens } from '../../src/web/token.js';
import { webTokenTool } from '../../src/web/token-tool.js';

const GUEST: Actor = { kind: 'guest', identity: { vmId: 'hn-alice', kind: 'headnode', headnode: 'hn-alice', owner: 'alice', group: 'physics' } };

function call(actor: Actor, ...argv: string[]): CliCall {
  return { actor, argv: ['web', 'token', ...argv], cwd: '/', env: {}, account: 'root', files: {}, missing: [] };
}

describe('dashboard tokens (gc web token)', function () {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'copper-webtok-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps one secret per state folder, readable by root only', function () {
    const a = loadWebSecret(dir);
    expect(a).to.have.length(32);
    expect(loadWebSecret(dir).equals(a)).to.equal(true);
    expect(statSync(join(dir, 'web-secret')).mode & 0o777).to.equal(0o600);
  });

  it('verifies its own tokens; refuses another secret, tampering and expiry', function () {
    let now = 1_000_000_000_000;
    const t = new WebTokens(loadWebSecret(dir), () => now);
    const tok = t.mint('alice', false, 60);
    expect(t.verify(tok)).to.deep.equal({ user: 'alice', admin: false, expiresAt: 1_000_000_060 });
    const other = new WebTokens(Buffer.alloc(32, 7), () => now);
    expect(() => other.verify(tok)).to.throw(BadTokenError, /bad signature/);
    const [p, m] = tok.split('.');
    const admin = Buffer.from(JSON.stringify({ u: 'alice', a: 1, e: 1_000_000_060 })).toString('base64url');
    expect(() => t.verify(`${admin}.${m}`)).to.throw(BadTokenError, /bad signature/);
    expect(() => t.verify(p)).to.throw(BadTokenError, /malformed/);
    now += 60_000;
    expect(() => t.verify(tok)).to.throw(BadTokenError, /expired/);
  });

  it('in a headnode mints for its owner only, never admin; the host must name the user', async function () {
    const tokens = new WebTokens(loadWebSecret(dir));
    const tool = webTokenTool(tokens, () => 'http://127.0.0.1:8080');
    const r = await tool(call(GUEST));
    expect(r.exitCode).to.equal(0);
    expect(tokens.verify(r.stdout.trim())).to.include({ user: 'alice', admin: false });
    expect(r.stderr).to.equal(`open http://127.0.0.1:8080/?token=${r.stdout.trim()}\n`);
    await tool(call(GUEST, '--user', 'bob')).then(
      () => expect.fail('minted for bob'),
      (e: unknown) => expect(e).to.be.instanceOf(PermissionError),
    );
    await tool(call(GUEST, '--admin')).then(
      () => expect.fail('minted admin'),
      (e: unknown) => expect(e).to.be.instanceOf(PermissionError),
    );
    await tool(call({ kind: 'admin' })).then(
      () => expect.fail('no user'),
      (e: unknown) => expect(e).to.be.instanceOf(UsageError),
    );
    await tool(call({ kind: 'admin' }, '--ttl', '40d')).then(
      () => expect.fail('ttl'),
      (e: unknown) => expect(e).to.be.instanceOf(UsageError),
    );
    const adm = await tool(call({ kind: 'admin' }, '--admin', '--ttl', '1h'));
    expect(tokens.verify(adm.stdout.trim())).to.include({ admin: true });
    const bob = await tool(call({ kind: 'admin' }, '--user', 'bob'));
    expect(tokens.verify(bob.stdout.trim())).to.include({ user: 'bob', admin: false });
  });
});
