#!/usr/bin/env node
import { main } from '../dist/src/client/gc.js';
process.exitCode = await main(process.argv.slice(2));
