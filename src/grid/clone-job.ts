/** Which job a clone belongs to, from its id alone (the runner names clones `j<seq>[-<index>]-r<run>`). */
const CLONE_ID = /^j(\d{1,15})(?:-(\d{1,9}))?-r(\d{1,9})$/;

/** The job id a runner's clone id stands for on this server, or undefined for any other name. */
export function jobIdOfClone(cloneId: string, serverName: string): string | undefined {
  const m = CLONE_ID.exec(cloneId);
  if (!m) return undefined;
  return `${m[1]}${m[2] !== undefined ? `[${m[2]}]` : ''}.${serverName}`;
}
