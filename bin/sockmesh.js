#!/usr/bin/env node
// The installed entry point runs the compiled CLI; `npm run build` produces it.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'cli', 'main.js');
if (!existsSync(entry)) {
  console.error('SOCKMESH_E_NOT_BUILT: dist/cli/main.js is missing (run `npm run build` in ' + root + ')');
  process.exit(2);
}
await import(pathToFileURL(entry).href);
