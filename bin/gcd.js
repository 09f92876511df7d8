#!/usr/bin/env node
import { main } from '../dist/src/server/gcd-main.js';
// gcd has released everything it owns when main returns; stray library timers must not keep it alive.
process.exit(await main(process.argv.slice(2)));
