/**
 * `QuotaWatcher` keeps the configuration in force for a config folder and reloads it on SIGHUP
 * and on file changes, keeping the previous settings when the new file is broken.
 */
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { UsageError, errorMessage } from '../errors.js';
import { parseQuotaText } from './quota-parse.js';
import { QUOTA_FILE_NAME, emptyQuotaConfig, type QuotaConfig } from './quota-types.js';

export interface QuotaWatcherOptions {
  /** The admin config folder (Settings.configDir). */
  dir: string;
  /** Default `quotas.yaml`. */
  fileName?: string;
  /** Quiet time after the last file event before reloading (editors write in several steps). Default 250 ms. */
  debounceMs?: number;
  /** Signal that reloads; default SIGHUP; null installs no handler. */
  signal?: NodeJS.Signals | null;
  /** Watch the folder for changes (default true). SIGHUP and reload() work either way. */
  watch?: boolean;
  /** Called with each configuration applied after start(). */
  onReload?: (cfg: QuotaConfig) => void;
  /** Called when a reload is refused; the previous settings stay in force. */
  onError?: (err: UsageError) => void;
}

/**
 * The configuration in force. start() reads `<dir>/quotas.yaml` (no file: no limits; a broken
 * file: start() throws, so a daemon never starts on settings the admin did not write). After
 * that, SIGHUP or a change in the folder reloads the file; a broken or removed file is
 * reported through onError and the previous settings stay in force.
 */
export class QuotaWatcher {
  readonly path: string;
  private cfg: QuotaConfig = emptyQuotaConfig();
  /** Text of the file in force; undefined while running on built-in defaults. */
  private text: string | undefined;
  private fsWatcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly onSignal = (): void => {
    this.reload();
  };
  private started = false;

  constructor(private readonly o: QuotaWatcherOptions) {
    this.path = join(o.dir, o.fileName ?? QUOTA_FILE_NAME);
  }

  current(): QuotaConfig {
    return this.cfg;
  }

  /** Loads the file and starts listening. Throws UsageError when the file exists and is broken. */
  start(): QuotaConfig {
    if (this.started) return this.cfg;
    const text = this.read();
    if (text !== undefined) {
      this.cfg = parseQuotaText(text, this.path);
      this.text = text;
    }
    this.started = true;
    const signal = this.o.signal === undefined ? 'SIGHUP' : this.o.signal;
    if (signal !== null) process.on(signal, this.onSignal);
    if (this.o.watch !== false) this.watchDir();
    return this.cfg;
  }

  /**
   * Reads the file now. True when the settings in force match the file (new or unchanged);
   * false when it was refused (reported through onError, previous settings kept).
   */
  reload(): boolean {
    return this.apply(true);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.fsWatcher?.close();
    this.fsWatcher = undefined;
    const signal = this.o.signal === undefined ? 'SIGHUP' : this.o.signal;
    if (signal !== null) process.off(signal, this.onSignal);
    this.started = false;
  }

  private apply(explicit: boolean): boolean {
    let text: string | undefined;
    try {
      text = this.read();
    } catch (err) {
      this.report(err as UsageError);
      return false;
    }
    if (text === undefined) {
      if (this.text === undefined) return true; // never had a file: still built-in defaults
      this.report(new UsageError(`${this.path}: the file is gone; keeping the previous settings (write an empty file to drop every limit)`));
      return false;
    }
    if (text === this.text && !explicit) return true;
    try {
      this.cfg = parseQuotaText(text, this.path);
    } catch (err) {
      this.report(err instanceof UsageError ? err : new UsageError(`${this.path}: ${errorMessage(err)}`, { cause: err }));
      return false;
    }
    this.text = text;
    this.o.onReload?.(this.cfg);
    return true;
  }

  private report(err: UsageError): void {
    if (this.o.onError) this.o.onError(err);
  }

  /** The file's text, or undefined when there is no file. */
  private read(): string | undefined {
    try {
      return readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new UsageError(`${this.path}: cannot be read: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Watches the folder, not the file: editors and config managers replace the file by a
   * rename (a new inode a file watch would miss), or swap a symlinked directory.
   */
  private watchDir(): void {
    try {
      this.fsWatcher = watch(this.o.dir, { persistent: false }, () => this.schedule());
      this.fsWatcher.on('error', (err) => this.report(new UsageError(`${this.o.dir}: watching stopped: ${errorMessage(err)}; SIGHUP still reloads`)));
    } catch (err) {
      // No folder (yet): SIGHUP and reload() still work.
      this.fsWatcher = undefined;
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.report(new UsageError(`${this.o.dir}: cannot be watched: ${errorMessage(err)}; SIGHUP still reloads`));
      }
    }
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.apply(false);
    }, this.o.debounceMs ?? 250);
    this.timer.unref();
  }
}
