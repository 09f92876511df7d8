import type { Redis } from 'ioredis';
import type { JobStore } from '../../queue/job-store.js';
import type { Keys } from '../../queue/keys.js';
import type { MailSettings } from './mail-settings.js';
import { MailNotifier } from './notifier.js';
import { createMailTransport } from './transport.js';

export { MailNotifier } from './notifier.js';
export { mailSettings, type MailSettings } from './mail-settings.js';

export interface MailNotifierDeps {
  redis: Redis;
  keys: Keys;
  serverName: string;
  /** The scheduler's store: where a message that could not be sent is noted. */
  jobs: Pick<JobStore, 'update'>;
  settings: MailSettings;
}

/** gcd's job mail: the configured route (SMTP relay or sendmail); subscribe onTransition to Scheduler.events. */
export function createMailNotifier(d: MailNotifierDeps): MailNotifier {
  return new MailNotifier({ ...d, transport: createMailTransport(d.settings) });
}
