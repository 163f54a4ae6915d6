// An MCP host (official SDK) reaching a remote MCP server through Latchkey's proxy, recording
// every HTTP answer it received so a test can assert that no OAuth challenge reached it.
//   node client-remote.mjs --url <proxy url> --header "Name: value" [--count N]
// Prints one JSON line: {"whoami": {...}, "notifications": n, "count": "...", "statuses": [...],
// "challenges": n} on success, or {"error": {"code", "message", "data"}, "statuses", "challenges"}
// when the server (or Latchkey) answered a request with an error. Exits 0 either way; 1 on a
// crash of the script itself.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const args = process.argv.slice(2);
const option = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const text = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');
const url = option('--url');
const headers = {};
args.forEach((a, i) => {
  if (a === '--header') {
    const [name, ...value] = args[i + 1].split(':');
    headers[name.trim()] = value.join(':').trim();
  }
});
const statuses = [];
let challenges = 0;
const recordingFetch = async (input, init) => {
  const response = await fetch(input, init);
  statuses.push(response.status);
  if (response.headers.has('www-authenticate')) challenges += 1;
  return response;
};

const client = new Client({ name: 'latchkey-remote-host', version: '1.0.0' });
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers }, fetch: recordingFetch }));
  const { tools } = await client.listTools();
  if (!tools.some((t) => t.name === 'whoami')) throw new Error(`no whoami tool among ${tools.map((t) => t.name)}`);
  const who = await client.callTool({ name: 'whoami', arguments: {} });
  const out = { whoami: JSON.parse(text(who)) };
  const count = option('--count');
  if (count !== undefined) {
    let notifications = 0;
    const counted = await client.callTool({ name: 'count', arguments: { n: Number(count) } }, undefined, {
      onprogress: () => { notifications += 1; },
    });
    out.notifications = notifications;
    out.count = text(counted);
  }
  await client.close();
  process.stdout.write(`${JSON.stringify({ ...out, statuses, challenges })}\n`);
  process.exit(0);
} catch (e) {
  const error = { code: e?.code ?? null, message: String(e?.message ?? e), data: e?.data ?? null };
  process.stdout.write(`${JSON.stringify({ error, statuses, challenges })}\n`);
  process.exit(0);
}
