// Where the pinned TypeScript SDK is: `make deps` installs it into <repo>/.cache/npm
// ($MCP_TS_SDK_DIR overrides). ESM resolves bare names from the importing file's folder only, and
// this folder has no node_modules, so the SDK's modules are imported by path.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SDK_DIR =
  process.env.MCP_TS_SDK_DIR || join(REPO, '.cache', 'npm', 'node_modules', '@modelcontextprotocol', 'sdk');

/** Import `dist/esm/<path>` of the installed SDK (e.g. "client/index.js"). */
export async function sdk(path) {
  const file = join(SDK_DIR, 'dist', 'esm', path);
  if (!existsSync(file)) {
    throw new Error(`@modelcontextprotocol/sdk is not installed at ${SDK_DIR} (run \`make deps\`): ${file} is missing`);
  }
  return import(pathToFileURL(file).href);
}
