/** The ImageSource for headnodes created without --image: the project-built Debian image. */
import { buildImage, guestKernelCmdline } from './image.js';
import type { ImageSource } from '../headnodes/spec.js';
import type { BootFiles } from '../headnodes/record.js';

export interface DefaultImageOptions {
  /** Where images are cached (buildImage's stateDir; normally settings.stateDir). */
  stateDir: string;
  log?: (line: string) => void;
}

export function defaultImageSource(opts: DefaultImageOptions): ImageSource {
  return {
    async defaultBoot(hostname: string): Promise<BootFiles> {
      const img = await buildImage(opts.log ? { stateDir: opts.stateDir, log: opts.log } : { stateDir: opts.stateDir });
      return { base: img.disk, kernel: img.kernel, initrd: img.initrd, append: guestKernelCmdline({ hostname, sftp: true }) };
    },
  };
}
