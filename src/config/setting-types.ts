import { resolve } from 'node:path';
import { UsageError } from '../errors.js';

/**
 * A `GC_*` environment variable with a value Copper cannot use. The message is one line,
 * `NAME=value: reason`, so a tool or gcd can print it as it is and exit with status 2.
 */
export class SettingError extends UsageError {
  constructor(
    readonly variable: string,
    readonly value: string,
    readonly reason: string,
  ) {
    super(`${variable}=${value}: ${reason}`);
  }
}

/** Turns a variable's text (never empty: empty means unset) into its value, or says why not. */
export type SettingParser<T> = (text: string, variable: string) => T;

/** A folder or file; relative paths are taken from the current folder, as before. */
export const path: SettingParser<string> = (text) => resolve(text);

/** Any text; the variable is declared so that it is documented and found in one place. */
export const text: SettingParser<string> = (t) => t;

/** One of a fixed set of words. */
export function choice<const W extends string>(...words: W[]): SettingParser<W> {
  const list = words.map((w) => `'${w}'`);
  const expected = list.length === 2 ? `${list[0]} or ${list[1]}` : `one of ${list.join(', ')}`;
  return (t, variable) => {
    const hit = words.find((w) => w === t);
    if (hit === undefined) throw new SettingError(variable, t, `must be ${expected}`);
    return hit;
  };
}

/** A whole number >= min, in decimal digits only (no '1e3', no '0x10', no sign). */
export function wholeNumber(min: number, what = `a whole number >= ${min}`): SettingParser<number> {
  return (t, variable) => {
    const n = /^\d+$/.test(t) ? Number(t) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new SettingError(variable, t, `not ${what}`);
    return n;
  };
}

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3, tb: 1024 ** 4 };

/** A size in bytes: plain digits, or digits with kb, mb, gb or tb (powers of 1024, any case). */
export const byteSize: SettingParser<number> = (t, variable) => {
  const m = /^(\d+)\s*([kmgt]?b?)$/i.exec(t.trim());
  const unit = m ? SIZE_UNITS[(m[2] ?? '').toLowerCase().replace(/^([kmgt])$/, '$1b')] : undefined;
  const n = m && unit !== undefined ? Number(m[1]) * unit : NaN;
  if (!Number.isSafeInteger(n)) throw new SettingError(variable, t, 'not a size (e.g. 512mb, 4gb, or bytes)');
  return n;
};

/** A duration in milliseconds, >= min. */
export function milliseconds(min = 0): SettingParser<number> {
  return wholeNumber(min, min > 0 ? `a number of milliseconds >= ${min}` : 'a number of milliseconds');
}

/** A URL whose scheme is one of `schemes` (e.g. 'redis:'). */
export function url(...schemes: string[]): SettingParser<string> {
  return (t, variable) => {
    const shown = t.replace(/\/\/[^@/]*@/, '//***@'); // a password in the URL stays out of messages
    let u: URL;
    try {
      u = new URL(t);
    } catch {
      throw new SettingError(variable, shown, 'not a URL');
    }
    if (!schemes.includes(u.protocol)) throw new SettingError(variable, shown, `must be a ${schemes.map((s) => `${s}//`).join(' or ')} URL`);
    return t;
  };
}

/** A word made of the given characters (names that end up in keys and job ids). */
export function word(pattern: RegExp, what: string): SettingParser<string> {
  return (t, variable) => {
    if (!pattern.test(t)) throw new SettingError(variable, t, `not ${what}`);
    return t;
  };
}

/**
 * Debian package names, separated by commas or spaces; sorted and without repeats, so the
 * same set written in another order is the same image. Versions and suites are refused:
 * the image follows its suite, as the built-in packages do.
 */
export const debianPackages: SettingParser<readonly string[]> = (t, variable) => {
  const names = t.split(/[\s,]+/).filter((n) => n !== '');
  const bad = names.find((n) => !/^[a-z0-9][a-z0-9+.-]+$/.test(n));
  if (bad !== undefined) throw new SettingError(variable, t, `'${bad}' is not a Debian package name (lowercase letters, digits, + . -)`);
  return [...new Set(names)].sort();
};
