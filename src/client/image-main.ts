/**
 * Standalone entry for CI and provisioning: `node dist/src/client/image-main.js build [--force]`
 * (same as `gc image ...`).
 */
import { imageCommand } from './image-cmd.js';

process.exitCode = await imageCommand(process.argv.slice(2));
