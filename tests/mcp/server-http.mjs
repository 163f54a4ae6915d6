// An MCP server over Streamable HTTP (official SDK, stateful sessions) on 127.0.0.1 that demands
// `X-API-Key: <--expect-key or env EXPECT_KEY>` on every request (401 otherwise), as a protected
// upstream would. Its first stdout line is {"url": "http://127.0.0.1:<port>/mcp"}.
// whoami answers {"fingerprint": sha256(received key)[0..12], "authorization": bool,
// "latchkeyClient": bool} — the last two say whether such headers reached the server.
// With --resumable it keeps an event store (streams resume with Last-Event-ID, retry: 100 ms),
// offers logging and the tools of tools-bridge.mjs, and prints a JSON line per session start,
// GET and DELETE ({"event": "session" | "GET" | "DELETE", "session": id, "lastEventId"?}); its
// `expire` tool forgets the session, which then answers 404 like a session that timed out.
import { randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { fingerprint, registerTools } from './tools.mjs';
import { registerBridgeTools } from './tools-bridge.mjs';
import { EventStore } from './event-store.mjs';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' }, 'expect-key': { type: 'string' }, resumable: { type: 'boolean', default: false } } });
const resumable = values.resumable;
const report = (line) => { if (resumable) process.stdout.write(`${JSON.stringify(line)}\n`); };
// Open standalone GET responses per session (a message sent outside a request reaches the
// client only while one is open).
const listeners = new Map();
const listening = (sessionId) => [...(listeners.get(sessionId) ?? [])].some((res) => res.headersSent);
const expected = values['expect-key'] ?? process.env.EXPECT_KEY;
if (!expected) {
  process.stderr.write('--expect-key (or env EXPECT_KEY) is required\n');
  process.exit(2);
}

const authorized = (req) => {
  const got = Buffer.from(String(req.headers['x-api-key'] ?? ''));
  const want = Buffer.from(expected);
  return got.length === want.length && timingSafeEqual(got, want);
};

const whoami = (extra) => {
  const headers = extra?.requestInfo?.headers ?? {};
  return {
    fingerprint: fingerprint(headers['x-api-key']),
    authorization: headers.authorization !== undefined,
    latchkeyClient: headers['x-latchkey-client'] !== undefined,
  };
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
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'unauthorized', message: 'X-API-Key missing or wrong' }));
      return;
    }
    const body = req.method === 'POST' ? await readJson(req) : undefined;
    const sessionId = req.headers['mcp-session-id'];
    if (req.method === 'GET' || req.method === 'DELETE') {
      report({ event: req.method, session: sessionId, lastEventId: req.headers['last-event-id'] });
    }
    if (req.method === 'GET' && !req.headers['last-event-id'] && sessionId) {
      if (!listeners.has(sessionId)) listeners.set(sessionId, new Set());
      listeners.get(sessionId).add(res);
      res.on('close', () => listeners.get(sessionId)?.delete(res));
    }
    let transport = sessionId ? sessions.get(sessionId) : undefined;
    if (!transport) {
      if (resumable && sessionId) {
        // A session this server no longer knows: 404, as the specification says.
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null }));
        return;
      }
      if (req.method !== 'POST' || !isInitializeRequest(body)) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message: 'no valid session' }, id: null }));
        return;
      }
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => { sessions.set(id, transport); report({ event: 'session', session: id }); },
        ...(resumable ? { eventStore: new EventStore(), retryInterval: 100 } : {}),
      });
      transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId); };
      const mcp = new McpServer({ name: 'latchkey-test-http', version: '1.0.0' }, resumable ? { capabilities: { logging: {} } } : undefined);
      registerTools(mcp, { whoami });
      if (resumable) {
        registerBridgeTools(mcp, { listening });
        mcp.registerTool(
          'expire',
          { description: 'Forgets this session, as a server whose sessions time out', inputSchema: {} },
          async (_args, extra) => {
            sessions.delete(extra.sessionId);
            return { content: [{ type: 'text', text: 'expired' }] };
          },
        );
      }
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
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${port}/mcp` })}\n`);
});
