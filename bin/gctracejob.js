#!/usr/bin/env node
import { main } from '../dist/src/cli/client.js';
process.exitCode = await main('gctracejob');
