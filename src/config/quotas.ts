/**
 * The admin quota and queue configuration: `<configDir>/quotas.yaml` (see docs/quotas.md).
 *
 * `parseQuotaText` turns the file into a `QuotaConfig` or refuses it whole with a UsageError
 * whose one-line message is `file:line: reason`: YAML syntax, an unknown key (with a
 * did-you-mean), a wrong type, a negative number, a malformed size or duration, and
 * contradictions (max_running above max_queued, a queue default above its maximum, ...).
 * `QuotaWatcher` keeps the current configuration of a config folder and reloads it on SIGHUP
 * and on file changes, keeping the previous settings when the new file is broken.
 *
 * In a parsed configuration, a limit left out is `undefined` (inherit / no limit) and a limit
 * written as `unlimited` is `Infinity` (it overrides what would be inherited).
 *
 * The work is split by concern: quota-types (the parsed shape), quota-reader (YAML walking and
 * positions), quota-checks (contradictions), quota-suggest (did-you-mean), quota-parse (the
 * file as a whole), quota-watcher (reloading). This module is the one import path for all of it.
 */
export {
  QUOTA_FILE_NAME,
  emptyQuotaConfig,
  formatLimit,
  type EntityLimits,
  type Limits,
  type QueueConfig,
  type QuotaConfig,
  type SystemLimits,
} from './quota-types.js';
export { suggest } from './quota-suggest.js';
export { loadQuotaFile, parseQuotaText } from './quota-parse.js';
export { QuotaWatcher, type QuotaWatcherOptions } from './quota-watcher.js';
