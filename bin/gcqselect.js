#!/usr/bin/env node
import { main } from '../dist/src/client/cli-client.js';
process.exitCode = await main('gcqselect');
