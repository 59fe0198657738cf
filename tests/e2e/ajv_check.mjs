// An independent JSON Schema judge for test data: Ajv (the validator the TypeScript SDK itself
// uses, installed with it into .cache/npm), draft 2020-12 (MCP's default dialect), formats
// asserted, `pattern` compiled by JavaScript's own RegExp with the `u` flag, i.e. ECMA-262.
//
//   echo '[{"schema": {...}, "instances": [...]}, ...]' | node ajv_check.mjs
//   -> [[{"valid": true} | {"valid": false, "errors": [...]}, ...], ...]
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { SDK_DIR } from './ts_sdk.mjs';

// Resolve Ajv the way the SDK does, from the SDK's own folder.
const require = createRequire(join(SDK_DIR, 'package.json'));
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats').default;

const ajv = new Ajv2020({ strict: false, allErrors: false, validateFormats: true });
addFormats(ajv);

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const batches = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const out = batches.map(({ schema, instances }) => {
  const validate = ajv.compile(schema);
  return instances.map((x) => (validate(x) ? { valid: true } : { valid: false, errors: validate.errors }));
});
process.stdout.write(JSON.stringify(out));
