import { UsageError } from '../errors.js';

/**
 * Signals a job's process group may be sent (gcqsig -s, walltime, gcqdel): Linux x86 numbers,
 * the same in every clone. STOP/CONT are refused by gcqsig: suspend and resume pause the
 * whole clone instead (a stopped process would still count its walltime).
 */
export const SIGNAL_NUMBERS = {
  HUP: 1, INT: 2, QUIT: 3, ABRT: 6, KILL: 9, USR1: 10, SEGV: 11, USR2: 12, PIPE: 13, ALRM: 14, TERM: 15,
  CONT: 18, STOP: 19, TSTP: 20, TTIN: 21, TTOU: 22, URG: 23, XCPU: 24, XFSZ: 25, VTALRM: 26, PROF: 27, WINCH: 28, IO: 29, PWR: 30, SYS: 31,
} as const;

export type SignalName = keyof typeof SIGNAL_NUMBERS;

/** `TERM`, `SIGTERM`, `sigterm` or `15` -> `TERM`; anything else is a UsageError naming the choices. */
export function parseSignal(text: string): SignalName {
  const t = text.trim().toUpperCase().replace(/^SIG/, '');
  if (t in SIGNAL_NUMBERS) return t as SignalName;
  if (/^\d+$/.test(t)) {
    const byNumber = (Object.keys(SIGNAL_NUMBERS) as SignalName[]).find((k) => SIGNAL_NUMBERS[k] === Number(t));
    if (byNumber) return byNumber;
  }
  throw new UsageError(`-s ${text}: not a signal; use suspend, resume, or a name or number such as TERM, HUP, USR1, 15`);
}
