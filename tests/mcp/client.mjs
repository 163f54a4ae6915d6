// An MCP client (official SDK).
//   node client.mjs --url <url> [--header "Name: value"]...   Streamable HTTP: lists tools, calls
//       echo and count (with progress), prints one JSON line {tools, echo, notifications, result}.
//   node client.mjs --stdio -- <command> [args...]   stdio: calls whoami and prints its text.
// Exits non-zero with the error on stderr.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const args = process.argv.slice(2);
const client = new Client({ name: 'latchkey-test-client', version: '1.0.0' });
const text = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');

try {
  if (args[0] === '--stdio') {
    const cut = args.indexOf('--');
    const [command, ...rest] = args.slice(cut + 1);
    await client.connect(new StdioClientTransport({ command, args: rest, env: process.env, stderr: 'inherit' }));
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    if (result.isError) throw new Error(`whoami failed: ${text(result)}`);
    process.stdout.write(`${text(result)}\n`);
  } else {
    const url = args[args.indexOf('--url') + 1];
    const headers = {};
    args.forEach((a, i) => {
      if (a === '--header') {
        const [name, ...value] = args[i + 1].split(':');
        headers[name.trim()] = value.join(':').trim();
      }
    });
    await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }));
    const { tools } = await client.listTools();
    const echo = text(await client.callTool({ name: 'echo', arguments: { text: 'hello through latchkey' } }));
    let notifications = 0;
    const counted = await client.callTool({ name: 'count', arguments: { n: 3 } }, undefined, { onprogress: () => { notifications += 1; } });
    process.stdout.write(`${JSON.stringify({ tools: tools.map((t) => t.name), echo, notifications, result: text(counted) })}\n`);
  }
  await client.close();
  process.exit(0);
} catch (e) {
  process.stderr.write(`client.mjs: ${e?.stack ?? e}\n`);
  process.exit(1);
}
