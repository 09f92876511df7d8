/** The PVH entry of a kernel: QEMU boots such an ELF directly, without bzImage setup or decompression. */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { errorMessage } from '../errors.js';
import { run } from './host-tools.js';

/**
 * Unpack the ELF kernel inside a bzImage when it has a PVH entry note: QEMU then jumps straight
 * into it, skipping the real-mode setup and the in-guest xz decompression (about 10 s under
 * TCG). Returns true, or why not (the caller falls back to the bzImage).
 */
export async function extractPvhKernel(bzImage: string, out: string): Promise<true | string> {
  const data = await readFile(bzImage);
  const formats: { magic: Buffer; cmd: string; args: string[] }[] = [
    { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), cmd: 'xz', args: ['-dc', '--single-stream'] },
    { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), cmd: 'zstd', args: ['-dcq'] },
    { magic: Buffer.from([0x1f, 0x8b, 0x08]), cmd: 'gzip', args: ['-dc'] },
  ];
  const found = formats
    .map((f) => ({ ...f, at: data.indexOf(f.magic) }))
    .filter((f) => f.at >= 0)
    .sort((a, b) => a.at - b.at)[0];
  if (found === undefined) return 'no known compression inside the bzImage';
  const tmpIn = `${out}.payload`;
  await writeFile(tmpIn, data.subarray(found.at));
  try {
    // The payload is followed by other data: xz --single-stream and gzip stop at the end of
    // the stream (gzip warns about trailing garbage and exits 2).
    await run('sh', ['-c', `${found.cmd} ${found.args.join(' ')} < "$1" > "$2" || [ $? = 2 ]`, 'sh', tmpIn, out]);
  } catch (err) {
    await rm(out, { force: true });
    return `cannot decompress it with ${found.cmd}: ${errorMessage(err)}`;
  } finally {
    await rm(tmpIn, { force: true });
  }
  const elf = await readFile(out);
  if (!hasPvhNote(elf)) {
    await rm(out, { force: true });
    return 'the kernel has no PVH entry point (CONFIG_PVH)';
  }
  return true;
}

/** True when a 64-bit little-endian ELF has a Xen note of type XEN_ELFNOTE_PHYS32_ENTRY (18). */
export function hasPvhNote(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  const align4 = (n: number): number => (n + 3) & ~3;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || elf.readUInt32LE(ph) !== 4) continue; // PT_NOTE
    const off = Number(elf.readBigUInt64LE(ph + 8));
    const end = Math.min(off + Number(elf.readBigUInt64LE(ph + 32)), elf.length);
    for (let p = off; p + 12 <= end; ) {
      const namesz = elf.readUInt32LE(p);
      const descsz = elf.readUInt32LE(p + 4);
      const type = elf.readUInt32LE(p + 8);
      const name = elf.subarray(p + 12, p + 12 + Math.max(0, namesz - 1)).toString('latin1');
      if (name === 'Xen' && type === 18) return true;
      p += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}
