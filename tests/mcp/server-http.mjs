// An MCP server over Streamable HTTP (official SDK, stateful sessions) that demands
// `Authorization: Bearer <--expect-token>` on every request, as a protected upstream would.
// Prints {"ready":"mcp-http","url":...} when listening.
import { randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { registerTools } from './tools.mjs';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' }, 'expect-token': { type: 'string' } } });
const expected = values['expect-token'] ?? process.env.EXPECT_TOKEN;
if (!expected) {
  process.stderr.write('--expect-token is required\n');
  process.exit(2);
}

const authorized = (req) => {
  const got = Buffer.from(req.headers.authorization ?? '');
  const want = Buffer.from(`Bearer ${expected}`);
  return got.length === want.length && timingSafeEqual(got, want);
};

const sessions = new Map();

const readJson = (req) => new Promise((resolve, reject) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (!chunks.length) return resolve(undefined);
    try { resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))); } catch (e) { reject(e); }
  });
  req.on('error', reject);
});

const server = http.createServer(async (req, res) => {
  try {
    if (!req.url.startsWith('/mcp')) { res.writeHead(404).end(); return; }
    if (!authorized(req)) {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' });
      res.end(JSON.stringify({ error: 'unauthorized' }));
      return;
    }
    const body = req.method === 'POST' ? await readJson(req) : undefined;
    const sessionId = req.headers['mcp-session-id'];
    let transport = sessionId ? sessions.get(sessionId) : undefined;
    if (!transport) {
      if (req.method !== 'POST' || !isInitializeRequest(body)) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message: 'no valid session' }, id: null }));
        return;
      }
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId); };
      const mcp = new McpServer({ name: 'latchkey-test-http', version: '1.0.0' });
      registerTools(mcp);
      await mcp.connect(transport);
    }
    await transport.handleRequest(req, res, body);
  } catch (e) {
    process.stderr.write(`server-http: ${e?.message ?? e}\n`);
    if (!res.headersSent) res.writeHead(500).end();
  }
});

server.listen(Number(values.port), '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ ready: 'mcp-http', url: `http://127.0.0.1:${port}/mcp` })}\n`);
});
