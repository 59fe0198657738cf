// The official TypeScript SDK client (`Client` + `StreamableHTTPClientTransport`) run as a new
// user would: one session, the steps of a JSON plan in order, every result printed as JSON.
//
//   echo '{"url": "...", "token": "...", "steps": [...]}' | node ts_client.mjs
//
// Steps: {"op": "list", "kind": "tools|resources|resourceTemplates|prompts"} (follows nextCursor
// to the end), {"op": "call", "name", "arguments"}, {"op": "read", "uri"},
// {"op": "prompt", "name", "arguments"}. A step that throws is recorded (class, McpError code,
// message, data) and the plan goes on in the same session.
import { sdk } from './ts_sdk.mjs';

const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { McpError } = await sdk('types.js');

const MAX_PAGES = 100;
const LISTS = {
  tools: (c, p) => c.listTools(p),
  resources: (c, p) => c.listResources(p),
  resourceTemplates: (c, p) => c.listResourceTemplates(p),
  prompts: (c, p) => c.listPrompts(p),
};

async function listAll(client, kind) {
  const pages = [];
  const items = [];
  let cursor;
  do {
    const res = await LISTS[kind](client, cursor ? { cursor } : undefined);
    pages.push(res[kind].length);
    items.push(...res[kind]);
    cursor = res.nextCursor;
    if (pages.length > MAX_PAGES) throw new Error(`${kind}: more than ${MAX_PAGES} pages`);
  } while (cursor);
  return { pages, items };
}

async function run(client, step) {
  switch (step.op) {
    case 'list': return listAll(client, step.kind);
    case 'call': return client.callTool({ name: step.name, arguments: step.arguments ?? {} });
    case 'read': return client.readResource({ uri: step.uri });
    case 'prompt': return client.getPrompt({ name: step.name, arguments: step.arguments ?? {} });
    default: throw new Error(`unknown op ${step.op}`);
  }
}

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const plan = JSON.parse(Buffer.concat(chunks).toString('utf8'));

const headers = plan.token ? { Authorization: `Bearer ${plan.token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(plan.url), { requestInit: { headers } });
const client = new Client({ name: 'ts-sdk-e2e', version: '1.0.0' }, { capabilities: {} });
await client.connect(transport);
const out = { server: client.getServerVersion(), sessionId: transport.sessionId, steps: [] };
for (const step of plan.steps) {
  try {
    out.steps.push({ step, ok: true, result: await run(client, step), sessionId: transport.sessionId });
  } catch (e) {
    out.steps.push({
      step,
      ok: false,
      error: { class: e?.constructor?.name, isMcpError: e instanceof McpError, code: e?.code, message: e?.message, data: e?.data },
      sessionId: transport.sessionId,
    });
  }
}
await transport.terminateSession().catch(() => {});
await client.close();
process.stdout.write(JSON.stringify(out));
