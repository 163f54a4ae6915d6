// An MCP host made with the official TypeScript SDK, set up as a real host is: the Streamable HTTP
// transport with an OAuth `authProvider` (in memory; `redirectToAuthorization` only records being
// called) and the Latchkey client token in `X-Latchkey-Client`. It connects, lists the tools and
// calls `whoami`, then prints one JSON line: what worked, the errors that reached it (name,
// message, code, data) and what the OAuth provider was asked to do.
//   node client-auth.mjs --url <mcp url> --token <lk_...> [--timeout-ms 20000]
// Exits 0 whenever it could report (the outcome is in the JSON line).
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const args = process.argv.slice(2);
const option = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const url = option('--url');
const token = option('--token');
const timeoutMs = Number(option('--timeout-ms') ?? 20000);
if (!url || !token) {
  process.stderr.write('usage: client-auth.mjs --url <mcp url> --token <lk_...> [--timeout-ms N]\n');
  process.exit(2);
}

const calls = { redirect: 0, registered: 0, tokensSaved: 0 };
let clientInformation;
let tokens;
let verifier;
const authProvider = {
  get redirectUrl() { return 'http://127.0.0.1:9/callback'; },
  get clientMetadata() {
    return {
      client_name: 'latchkey-test-host (typescript)',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  },
  clientInformation: () => clientInformation,
  saveClientInformation: (info) => { calls.registered += 1; clientInformation = info; },
  tokens: () => tokens,
  saveTokens: (t) => { calls.tokensSaved += 1; tokens = t; },
  redirectToAuthorization: () => { calls.redirect += 1; },
  saveCodeVerifier: (v) => { verifier = v; },
  codeVerifier: () => verifier,
};

const describe = (e) => ({ name: e?.name, message: String(e?.message ?? e), code: e?.code, data: e?.data });
const outcome = { initialized: false, errors: [] };
const client = new Client({ name: 'latchkey-test-host', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  authProvider,
  requestInit: { headers: { 'X-Latchkey-Client': token } },
});
const text = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');
const timeout = new Promise((_, reject) => {
  setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs).unref();
});

try {
  await Promise.race([(async () => {
    await client.connect(transport);
    outcome.initialized = true;
    const { tools } = await client.listTools();
    outcome.tools = tools.map((t) => t.name).sort();
    outcome.whoami = JSON.parse(text(await client.callTool({ name: 'whoami', arguments: {} })));
  })(), timeout]);
} catch (e) {
  outcome.errors.push(describe(e));
}
await client.close().catch(() => {});
Object.assign(outcome, { redirectCalled: calls.redirect, registered: calls.registered, tokensSaved: calls.tokensSaved });
process.stdout.write(`${JSON.stringify(outcome)}\n`);
process.exit(0);
