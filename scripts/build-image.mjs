#!/usr/bin/env node
// Build (or find in the cache) the default headnode image. Needs root, debootstrap,
// e2fsprogs, qemu-utils, kmod, busybox-static and linux-image-amd64 on the host, and a
// compiled tree (npx tsc -p tsconfig.json). Usage: node scripts/build-image.mjs [--force]
import { imageCommand } from '../dist/src/client/image-cmd.js';

process.exitCode = await imageCommand(['build', ...process.argv.slice(2)]);
