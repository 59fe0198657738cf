// An MCP server on the official TypeScript SDK (low-level `Server`, Streamable HTTP, stateful
// sessions) that pages every list: tools 3 a page, resources 2, templates 1, prompts 2. Some pages
// hold only `admin_*` / `docs://admin/...` entries, so a caller who may not see them gets an empty
// page that still carries `nextCursor` (the case a per-caller list filter must keep intact).
//
//   node ts_paging_server.mjs --port N
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { sdk } from './ts_sdk.mjs';

const { Server } = await sdk('server/index.js');
const { StreamableHTTPServerTransport } = await sdk('server/streamableHttp.js');
const T = await sdk('types.js');

const obj = (properties, required = []) => ({ type: 'object', properties, required, additionalProperties: false });
const TOOLS = [
  { name: 'echo', description: 'Echo a message back.', inputSchema: obj({ message: { type: 'string' } }, ['message']) },
  { name: 'add', description: 'Add two integers.', inputSchema: obj({ a: { type: 'integer' }, b: { type: 'integer' } }, ['a', 'b']) },
  {
    name: 'search_docs',
    description: 'Search the documentation.',
    inputSchema: obj({
      query: { type: 'string', minLength: 1 },
      limit: { type: 'integer', minimum: 1, maximum: 50 },
      tags: { type: 'array', items: { type: 'string' } },
    }, ['query']),
  },
  { name: 'admin_purge', description: 'Purge the cache.', inputSchema: obj({ confirm: { type: 'boolean' } }, ['confirm']) },
  { name: 'admin_export', description: 'Export all records.', inputSchema: obj({ format: { type: 'string', enum: ['csv', 'json'] } }, ['format']) },
  { name: 'admin_rotate_keys', description: 'Rotate the signing keys.', inputSchema: obj({}) },
  { name: 'get_time', description: 'The server time.', inputSchema: obj({}) },
  {
    name: 'describe_item',
    description: 'Describe an item by id.',
    inputSchema: obj({ id: { type: 'integer', minimum: 1 }, verbose: { type: 'boolean' } }, ['id']),
  },
];
const RESOURCES = [
  ['docs://public/readme', 'readme'],
  ['docs://public/changelog', 'changelog'],
  ['docs://admin/audit', 'audit'],
  ['docs://public/faq', 'faq'],
  ['docs://admin/keys', 'keys'],
].map(([uri, name]) => ({ uri, name, mimeType: 'text/plain' }));
const TEMPLATES = [
  { uriTemplate: 'docs://items/{id}', name: 'item' },
  { uriTemplate: 'docs://admin/audit/{day}', name: 'audit-day' },
  { uriTemplate: 'docs://users/{name}/profile', name: 'profile' },
];
const PROMPTS = [
  { name: 'summarize', description: 'Summarize a text.', arguments: [{ name: 'text', required: true }] },
  { name: 'greet', description: 'Greet someone.', arguments: [{ name: 'name', required: false }] },
  { name: 'admin_report', description: 'The weekly admin report.', arguments: [] },
  { name: 'translate', description: 'Translate a text.', arguments: [{ name: 'text', required: true }, { name: 'language', required: true }] },
];

// An opaque cursor, as real servers use them: the offset of the next page.
const page = (items, size, key, cursor) => {
  const start = cursor ? Number.parseInt(Buffer.from(cursor, 'base64url').toString(), 10) : 0;
  if (!Number.isInteger(start) || start < 0 || start > items.length) {
    throw new T.McpError(T.ErrorCode.InvalidParams, `bad cursor ${cursor}`);
  }
  const out = { [key]: items.slice(start, start + size) };
  if (start + size < items.length) out.nextCursor = Buffer.from(String(start + size)).toString('base64url');
  return out;
};
const text = (t) => ({ content: [{ type: 'text', text: t }] });

function build() {
  const server = new Server({ name: 'ts-paging', version: '1.0.0' }, { capabilities: { tools: {}, resources: {}, prompts: {} } });
  server.setRequestHandler(T.ListToolsRequestSchema, (r) => page(TOOLS, 3, 'tools', r.params?.cursor));
  server.setRequestHandler(T.ListResourcesRequestSchema, (r) => page(RESOURCES, 2, 'resources', r.params?.cursor));
  server.setRequestHandler(T.ListResourceTemplatesRequestSchema, (r) => page(TEMPLATES, 1, 'resourceTemplates', r.params?.cursor));
  server.setRequestHandler(T.ListPromptsRequestSchema, (r) => page(PROMPTS, 2, 'prompts', r.params?.cursor));
  server.setRequestHandler(T.CallToolRequestSchema, (r) => {
    const a = r.params.arguments ?? {};
    switch (r.params.name) {
      case 'echo': return text(`Echo: ${a.message}`);
      case 'add': return text(String(a.a + a.b));
      case 'search_docs': return text(`${Math.min(a.limit ?? 10, 3)} hits for ${a.query}`);
      case 'get_time': return text('2026-01-01T00:00:00Z');
      case 'describe_item': return text(`item ${a.id}${a.verbose ? ' (verbose)' : ''}`);
      case 'admin_purge': case 'admin_export': case 'admin_rotate_keys': return text(`${r.params.name} done`);
      default: throw new T.McpError(T.ErrorCode.InvalidParams, `unknown tool ${r.params.name}`);
    }
  });
  server.setRequestHandler(T.ReadResourceRequestSchema, (r) => {
    const uri = r.params.uri;
    const known = RESOURCES.find((x) => x.uri === uri);
    const m = /^docs:\/\/(?:items\/(\d+)|admin\/audit\/([\w-]+)|users\/([\w-]+)\/profile)$/.exec(uri);
    if (!known && !m) throw new T.McpError(T.ErrorCode.InvalidParams, `no resource ${uri}`);
    return { contents: [{ uri, mimeType: 'text/plain', text: known ? `the ${known.name} document` : `contents of ${uri}` }] };
  });
  server.setRequestHandler(T.GetPromptRequestSchema, (r) => {
    const p = PROMPTS.find((x) => x.name === r.params.name);
    if (!p) throw new T.McpError(T.ErrorCode.InvalidParams, `no prompt ${r.params.name}`);
    const args = JSON.stringify(r.params.arguments ?? {});
    return { messages: [{ role: 'user', content: { type: 'text', text: `${p.name} ${args}` } }] };
  });
  return server;
}

const sessions = new Map();

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
}

function reply(res, status, message) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

const http = createServer(async (req, res) => {
  try {
    const sid = req.headers['mcp-session-id'];
    const body = req.method === 'POST' ? await readJson(req) : undefined;
    let transport = sid ? sessions.get(sid) : undefined;
    if (!transport && !sid && req.method === 'POST' && T.isInitializeRequest(body)) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      transport.onclose = () => sessions.delete(transport.sessionId);
      await build().connect(transport);
    }
    if (!transport) return reply(res, sid ? 404 : 400, sid ? 'Session not found' : 'No valid session id');
    await transport.handleRequest(req, res, body);
  } catch (e) {
    console.error('request failed', e);
    if (!res.headersSent) reply(res, 500, 'Internal error');
  }
});

const port = Number(process.argv[process.argv.indexOf('--port') + 1]);
http.listen(port, '127.0.0.1', () => console.log(`ts-paging listening on 127.0.0.1:${port}`));
