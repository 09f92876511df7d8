import { rename, writeFile } from 'node:fs/promises';

/** Write JSON through a temporary file and a rename: a reader sees the old file or the new one, never half. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, path);
}
