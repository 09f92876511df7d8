#!/usr/bin/env node
// Rewrites the settings table in README.md from the declarations in src/config/settings.ts
// (run `npx tsc -p tsconfig.json` first). test/unit/settings.test.ts fails when they differ.
import { readFileSync, writeFileSync } from 'node:fs';
import { withSettingsTable } from '../dist/src/config/settings-table.js';

const file = new URL('../README.md', import.meta.url);
const before = readFileSync(file, 'utf8');
const after = withSettingsTable(before);
if (after !== before) writeFileSync(file, after);
console.log(after === before ? 'README settings table: up to date' : 'README settings table: rewritten');
