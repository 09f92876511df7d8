import { expect } from 'chai';
import { createHmac } from 'node:crypto';
import { UsageError } from '../../src/errors.js';
import { nodeAclRules, nodeRedisPassword, nodeRedisUrl, nodeRedisUser, setUserCommand } from '../../src/grid/node-redis-users.js';
import { redisOptions } from '../../src/redis/connection.js';

describe('a node’s Redis user (grid/node-redis-users.ts)', () => {
  const token = 'a-node-token-long-enough-0123456789';

  it('a URL without credentials gets node-<name> and the password derived from the token', () => {
    const url = nodeRedisUrl('redis://10.1.0.1:6380', 'node7', token);
    const o = redisOptions({ url });
    expect(o).to.include({ host: '10.1.0.1', port: 6380, username: 'node-node7', password: nodeRedisPassword(token) });
    expect(nodeRedisPassword(token)).to.equal(createHmac('sha256', token).update('copper redis acl v1').digest('hex'));
    expect(nodeRedisPassword(token)).to.not.contain(token);
    expect(nodeRedisPassword(`${token}x`)).to.not.equal(nodeRedisPassword(token));
  });

  it('a URL with its own user or password is used as it is', () => {
    expect(nodeRedisUrl('redis://:pw@db:6379/2', 'node7', token)).to.equal('redis://:pw@db:6379/2');
    expect(nodeRedisUrl('rediss://admin:pw@db:6379', 'node7', undefined)).to.equal('rediss://admin:pw@db:6379');
  });

  it('without a token (and none in the URL) says what to do, in one line', () => {
    expect(() => nodeRedisUrl('redis://10.1.0.1:6380', 'node7', undefined))
      .to.throw(UsageError)
      .with.property('message')
      .that.matches(/^GC_REDIS_URL names no user: .* node-node7 .*gc node token node7\)$/);
  });

  it('rules: no admin command, own record only, other records and the host set read-only', () => {
    const r = nodeAclRules('copper', 'n1');
    expect(r[0]).to.equal('-@all');
    expect(r).to.include.members([
      '-@admin',
      '-@dangerous',
      '-acl',
      '-script',
      '-function',
      '~copper:node:n1',
      '~copper:node:n1:*',
      '%R~copper:node:*',
      '%R~copper:nodes',
    ]);
    expect(r.indexOf('-@dangerous')).to.be.greaterThan(r.indexOf('+@keyspace'));
    expect(r.filter((x) => x.startsWith('~') || x.startsWith('%')).every((x) => x.includes('copper:'))).to.equal(true);
    expect(r).to.not.include('~*');
    expect(() => nodeAclRules('cop*er', 'n1')).to.throw(UsageError);
    expect(() => nodeRedisUser('bad:name')).to.throw(UsageError);
    expect(setUserCommand('copper', 'n1', 'PW')).to.match(
      /^ACL SETUSER node-n1 reset on >PW -@all .* '\(\+sadd \+evalsha \+eval ~copper:nodes ~copper:node:n1 ~copper:node:n1:\*\)'$/,
    );
  });
});
