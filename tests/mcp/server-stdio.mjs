// An MCP server over stdio (official SDK) whose `whoami` tool reports the fingerprint of the
// DEMO_API_KEY it was started with (by `latchkey exec`): {"fingerprint": sha256(key)[0..12] or "missing"}.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { registerTools } from './tools.mjs';

const server = new McpServer({ name: 'latchkey-test-stdio', version: '1.0.0' });
registerTools(server);
await server.connect(new StdioServerTransport());
