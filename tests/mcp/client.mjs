// An MCP client (official SDK). Lists tools, calls whoami and prints the tool's text on stdout.
//   node client.mjs --url <mcp url> [--header "Name: value"]... [--count N]   Streamable HTTP;
//       with --count it then calls `count` (progress notifications over SSE) and prints a second
//       line {"notifications": <received>, "result": "<text>"}.
//   node client.mjs --stdio -- <command> [args...]   stdio (the current environment is passed on).
// Exits 0 on success, non-zero with the error on stderr otherwise.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const args = process.argv.slice(2);
const client = new Client({ name: 'latchkey-test-client', version: '1.0.0' });
const text = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');
const option = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };

try {
  let count;
  if (args[0] === '--stdio') {
    const [command, ...rest] = args.slice(args.indexOf('--') + 1);
    if (!command) throw new Error('usage: client.mjs --stdio -- <command> [args...]');
    await client.connect(new StdioClientTransport({ command, args: rest, env: process.env, stderr: 'inherit' }));
  } else {
    const url = option('--url');
    if (!url) throw new Error('usage: client.mjs --url <url> [--header "Name: value"]... [--count N]');
    const headers = {};
    args.forEach((a, i) => {
      if (a === '--header') {
        const [name, ...value] = args[i + 1].split(':');
        headers[name.trim()] = value.join(':').trim();
      }
    });
    count = option('--count');
    await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }));
  }
  const { tools } = await client.listTools();
  if (!tools.some((t) => t.name === 'whoami')) throw new Error(`no whoami tool among ${tools.map((t) => t.name)}`);
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  if (result.isError) throw new Error(`whoami failed: ${text(result)}`);
  process.stdout.write(`${text(result)}\n`);
  if (count !== undefined) {
    let notifications = 0;
    const counted = await client.callTool({ name: 'count', arguments: { n: Number(count) } }, undefined, {
      onprogress: () => { notifications += 1; },
    });
    process.stdout.write(`${JSON.stringify({ notifications, result: text(counted) })}\n`);
  }
  await client.close();
  process.exit(0);
} catch (e) {
  process.stderr.write(`client.mjs: ${e?.stack ?? e}\n`);
  process.exit(1);
}
