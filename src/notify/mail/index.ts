import type { Redis } from 'ioredis';
import { JobStore } from '../../queue/job-store.js';
import type { Keys } from '../../queue/keys.js';
import type { MailSettings } from './mail-settings.js';
import { MailNotifier } from './notifier.js';
import { createMailTransport } from './transport.js';

export { MailNotifier } from './notifier.js';
export type { MailSettings } from './mail-settings.js';

/** gcd's job mail: the configured route (SMTP relay or sendmail) behind a lifecycle listener. */
export function createMailNotifier(redis: Redis, keys: Keys, serverName: string, settings: MailSettings): MailNotifier {
  return new MailNotifier({
    jobs: new JobStore(redis, keys, serverName),
    redis,
    keys,
    serverName,
    settings,
    transport: createMailTransport(settings),
  });
}
