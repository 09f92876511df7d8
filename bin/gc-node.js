#!/usr/bin/env node
// gc-node: the same as `gcd --node`, a compute host of the grid.
import { main } from '../dist/src/server/gcd-main.js';
process.exit(await main(['--node', ...process.argv.slice(2)]));
